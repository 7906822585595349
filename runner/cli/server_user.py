"""Add a user to a tracking server with MLflow's basic-auth app, or change one, and grant a permission on an
experiment (runner/tracking/server_users.py). `make server-user` runs it as the admin of `make server`.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
        python -m runner.cli.server_user alice --experiment nn-runner --permission EDIT

A new user's password is asked for at the terminal (twice), or read as the first line of stdin when
it is not a terminal; it is never an argument (a command line is visible to every user of the machine).
Exit 0: done; 2: refused or bad input, with one line on stderr.
"""

import argparse
import getpass
import os
import sys

from runner import exit_codes
from runner.tracking.uri import ServerRefused, ServerUnreachable, check_access, redact

DEFAULT_URI = "http://127.0.0.1:5000"  # make server's address


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m runner.cli.server_user", description="Add a user to a "
                                     "tracking server with MLflow's basic-auth app (if new) and grant a permission "
                                     "on an experiment. Runs as the admin in MLFLOW_TRACKING_USERNAME/PASSWORD.")
    parser.add_argument("username", help="the user to add (asked for a password if new) or to change")
    parser.add_argument("--experiment", required=True, help="the experiment's name (created if missing)")
    parser.add_argument("--permission", default="EDIT", help="READ, USE, EDIT (log runs) or MANAGE (default: EDIT)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI,
                        help=f"the server (default: MLFLOW_TRACKING_URI, else {DEFAULT_URI})")
    return parser.parse_args(argv)


def read_password(username, stdin=sys.stdin):
    """The new user's password: typed twice at a terminal, else the first line of stdin."""
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for the new user {username!r}: ")
    if getpass.getpass("the same again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # server_users imports MLflow (~1.5 s): after the arguments are read (--help stays quick)
    from runner.tracking import server_users

    try:
        check_access(args.tracking_uri)
        created = not server_users.user_exists(args.tracking_uri, args.username)
        if created:
            server_users.add_user(args.tracking_uri, args.username, read_password(args.username))
        experiment_id = server_users.grant(args.tracking_uri, args.username, args.experiment, args.permission)
    # ImportError: MLflow's own one line when its auth extra (Flask-WTF) is missing: "pip install mlflow[auth]"
    except (ServerUnreachable, ServerRefused, server_users.UserError, ValueError, ImportError) as error:
        print(f"server_user: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    print(f"{'added' if created else 'kept'} user {args.username!r}; {args.permission} on experiment "
          f"{args.experiment!r} (id {experiment_id}) at {redact(args.tracking_uri)}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
