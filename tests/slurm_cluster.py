"""A real, throwaway single-node Slurm cluster on this machine, with accounting, for tests and for `make slurm`.

Debian's packages (`slurmctld slurmd slurmdbd slurm-client munge mariadb-server`, Slurm 22.05;
`.ci/run` installs them) run one controller, one node and the accounting daemon as root.
Everything of the cluster lives in one folder: its `slurm.conf` and `slurmdbd.conf` (free ports,
talking over 127.0.0.1), state, spool, the accounting database (a MariaDB of its own, `db/`, on a
loopback port and its own socket), logs and PID files. munged is the cluster's own too: its own key
(`munge/munge.key`, random) and socket (in a folder of its own under /tmp, which munged wants every
user to be able to reach; named in slurm.conf's `AuthInfo`), so two clusters on one machine (two test
runs, `make slurm` beside the tests) never share or stop each other's. The daemons are stopped by the
PIDs in their PID files (SIGTERM, a bounded wait, SIGKILL), after the cluster's jobs are cancelled.

Accounting (`slurmdbd` over MariaDB) is what makes `sacct` answer: submitit learns from it that a
job ended without writing its result (`scancel`, a time limit); without it `nn-run -m` would wait
for such a job forever.

    with slurm_cluster() as cluster:                      # or the fixture `slurm` below
        subprocess.run(["sbatch", ...], env=cluster.env)  # env carries SLURM_CONF

From a shell (what `make slurm` / `make slurm-stop` run):

    python tests/slurm_cluster.py start .slurm    # prints the `export SLURM_CONF=...` line
    python tests/slurm_cluster.py stop .slurm

Only the standard library is used, so this runs with any Python 3.11.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = "slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
DAEMONS = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd", "munged": "/usr/sbin/munged",
           "slurmdbd": "/usr/sbin/slurmdbd", "mariadbd": "/usr/sbin/mariadbd"}
CLIENTS = ("sinfo", "squeue", "scontrol", "scancel", "sbatch", "srun", "sacct", "sacctmgr", "munge", "unmunge",
           "mariadb", "mariadb-install-db")
ACCOUNTING_DB = "slurm_acct_db"
DB_USER = "slurm"  # slurmdbd's MariaDB user (from 127.0.0.1 only, a new random password at every start)
SOCKET_PATH_MAX = 107  # a Unix socket's path, in bytes (sun_path is 108 with its NUL)
MUNGE_KEY_BYTES = 1024  # what Debian's munge package makes (mungekey's default)
PARTITION = "debug"
START_SECONDS = 60  # measured here: the node is idle 0.06-1.1 s after start
STOP_SECONDS = 15
# slurmd refuses a job credential created in the second its job was revoked (Slurm: cred->ctime <= revoked)
REVOKED_CREDENTIAL_SECONDS = 2
CANCEL_SECONDS = 30
STATE_FILE = "started.json"  # what `start` started, for `stop`


def slurm_missing():
    """Why a cluster cannot be started here, or None when it can."""
    missing = [path for path in DAEMONS.values() if not os.access(path, os.X_OK)]
    missing += [name for name in CLIENTS if shutil.which(name) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} not found); "
                f".ci/run installs Debian's {PACKAGES} (apt, as root)")
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root (SlurmUser=root); not root here"
    return None


def free_ports(count):
    """`count` different TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path, lines=25):
    path = Path(path)
    if not path.exists():
        return f"({path}: no such file)"
    return f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited; only its parent's wait is missing
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pid_is(pid, program):
    """Whether process `pid` is named `program` (guards against a reused PID; /usr/sbin/slurmd links to
    slurmd-wlm, so the process name is compared, not the executable's)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == program
    except OSError:
        return False


def read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pid(pid, program, seconds=STOP_SECONDS):
    """SIGTERM `pid` if it still runs `program`, wait for it to go, SIGKILL it if it lingers.

    Returns a word on what happened: 'stopped', 'killed' or 'not running'.
    """
    if pid is None or not pid_alive(pid) or not pid_is(pid, program):
        return "not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return "stopped"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
    return "killed"


def step_daemons(folder):
    """PIDs of the slurmstepd processes of the cluster in `folder` (their working directory or an open file
    is in it: slurmd's log); slurmd starts one per job step, and they outlive slurmd."""
    folder = str(Path(folder).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_is(int(entry.name), "slurmstepd") or not pid_alive(int(entry.name)):
            continue
        try:
            links = [os.readlink(entry / "cwd")]
            links += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link == folder or link.startswith(folder + "/") for link in links):
            found.append(int(entry.name))
    return found


def descendants(pid):
    """PIDs of every live descendant of `pid`."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def node_line():
    """The NodeName line `slurmd -C` prints for this machine, with NodeAddr=127.0.0.1."""
    done = subprocess.run([DAEMONS["slurmd"], "-C"], capture_output=True, text=True, timeout=30, check=True)
    line = next(l for l in done.stdout.splitlines() if l.startswith("NodeName="))
    # RealMemory as reported (the most it may be); slurmd refuses a node that claims more
    return line.strip() + " NodeAddr=127.0.0.1 State=UNKNOWN"


@dataclass
class Ports:
    """The cluster's loopback ports, picked free at each start."""

    slurmctld: int
    slurmd: int
    slurmdbd: int
    mariadb: int


def write_dbd_conf(folder, ports, password, munge_socket):
    """slurmdbd.conf beside slurm.conf (slurmdbd reads it from SLURM_CONF's folder), mode 600: it holds a password."""
    path = folder / "slurmdbd.conf"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(f"""\
# The accounting daemon of the throwaway cluster written by tests/slurm_cluster.py; every path is in this folder.
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports.slurmdbd}
SlurmUser=root
PidFile={folder}/slurmdbd.pid
LogFile={folder}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports.mariadb}
StorageUser={DB_USER}
StoragePass={password}
StorageLoc={ACCOUNTING_DB}
""")
    return path


def write_conf(folder, munge_socket, name="nnrunner"):
    """Write slurm.conf (and its folders) into `folder`; returns (conf path, node name, Ports)."""
    folder = Path(folder).resolve()
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    node = node_line()
    node_name = node.split()[0].split("=", 1)[1]
    ports = Ports(*free_ports(4))
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
# A throwaway single-node Slurm cluster written by tests/slurm_cluster.py; every path is in this folder.
ClusterName={name}
SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)
SlurmctldPort={ports.slurmctld}
SlurmdPort={ports.slurmd}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports.slurmdbd}
AccountingStoragePass={munge_socket}
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
{node}
PartitionName={PARTITION} Nodes={node_name} Default=YES MaxTime=INFINITE State=UP
""")
    return conf, node_name, ports


def munge_works(socket_path):
    """Whether the munged on `socket_path` answers (`munge -n | unmunge` succeeds)."""
    try:
        cred = subprocess.run(["munge", "-n", "-S", str(socket_path)], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        return subprocess.run(["unmunge", "-S", str(socket_path)], input=cred.stdout, capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munged(folder, socket_path):
    """Start the cluster's own munged (as root) with its own key, PID file and seed in `folder`/munge and its
    socket at `socket_path`; returns its PID."""
    own = folder / "munge"
    own.mkdir(mode=0o700, exist_ok=True)
    key = own / "munge.key"
    if not key.exists():
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as handle:
            handle.write(secrets.token_bytes(MUNGE_KEY_BYTES))
    log = folder / "log" / "munged.log"
    done = subprocess.run([DAEMONS["munged"], f"--socket={socket_path}", f"--key-file={key}",
                           f"--pid-file={own / 'munged.pid'}", f"--seed-file={own / 'munged.seed'}",
                           f"--log-file={log}"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"munged exited with {done.returncode}: {done.stderr.strip()}\n{log_tail(log)}")
    wait_until("munged did not answer", lambda: munge_works(socket_path), 10, lambda: log_tail(log))
    pid = read_pid(own / "munged.pid")
    if pid is None or not pid_is(pid, "munged"):
        raise RuntimeError(f"munged answers but {own / 'munged.pid'} names no munged process")
    return pid


def port_open(port):
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mariadb_socket(folder):
    path = Path(folder) / "mariadb.sock"
    if len(str(path).encode()) > SOCKET_PATH_MAX:
        raise RuntimeError(f"{path} is too long for a Unix socket ({SOCKET_PATH_MAX} bytes at most): "
                           "start the cluster in a folder with a shorter path")
    return path


def sql(folder, statement):
    """Run `statement` on the cluster's MariaDB as its root (through its socket); returns the output."""
    # on stdin, not in the arguments: other users can read a process's arguments, and it may hold a password
    done = subprocess.run(["mariadb", "--no-defaults", f"--socket={mariadb_socket(folder)}", "-uroot", "-N", "-B"],
                          input=statement, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"mariadb exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_until(what, check, seconds, logs):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {seconds} s\n{logs()}")
        time.sleep(0.1)


def start_database(folder, ports, password):
    """Start the cluster's own MariaDB on 127.0.0.1:`ports.mariadb`, its data in `folder`/db (made at the first
    start, kept by later ones), root reachable only through its socket; give slurmdbd a user with `password`."""
    db, log = folder / "db", folder / "log" / "mariadb.log"
    sock = mariadb_socket(folder)
    if not (db / "mysql").is_dir():
        shutil.rmtree(db, ignore_errors=True)
        done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={db}", "--user=root",
                               "--skip-test-db"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    # setsid -f: mariadbd does not daemonize itself; it must outlive `make slurm` and be no child of pytest
    subprocess.run(["setsid", "-f", DAEMONS["mariadbd"], "--no-defaults", f"--datadir={db}", f"--socket={sock}",
                    f"--port={ports.mariadb}", "--bind-address=127.0.0.1", f"--pid-file={folder}/mariadb.pid",
                    "--user=root", "--skip-name-resolve", f"--log-error={log}",
                    "--innodb-lock-wait-timeout=900"],  # what slurmdbd asks for
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=30)

    def answers():
        pid = read_pid(folder / "mariadb.pid")
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"mariadbd ended\n{log_tail(log)}")
        try:
            return sql(folder, "SELECT 1").strip() == "1"
        except RuntimeError:
            return False

    wait_until("MariaDB did not answer", answers, START_SECONDS, lambda: log_tail(log))
    sql(folder, f"CREATE OR REPLACE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                f"GRANT ALL ON {ACCOUNTING_DB}.* TO '{DB_USER}'@'127.0.0.1';")


def start_slurmdbd(folder, ports, env):
    """Start slurmdbd (it daemonizes, reading slurmdbd.conf beside SLURM_CONF) and wait until it listens."""
    log = folder / "log" / "slurmdbd.log"
    done = subprocess.run([DAEMONS["slurmdbd"]], capture_output=True, text=True, timeout=60, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"slurmdbd exited with {done.returncode}: {done.stderr.strip()}\n{log_tail(log)}")

    def listens():
        pid = read_pid(folder / "slurmdbd.pid")
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"slurmdbd ended\n{log_tail(log)}")
        return port_open(ports.slurmdbd)

    wait_until("slurmdbd did not listen", listens, START_SECONDS, lambda: log_tail(log))


@dataclass
class SlurmCluster:
    """A running single-node cluster: its folder, slurm.conf, node, and an `env` for Slurm's clients."""

    folder: Path
    conf: Path
    node: str
    env: dict = field(repr=False)  # os.environ plus SLURM_CONF: pass it to sbatch, squeue, nn-run ...
    partition: str = PARTITION

    def run(self, *args, check=True, timeout=30):
        """Run a Slurm client command against this cluster; returns the CompletedProcess (text)."""
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
        return done

    def node_state(self):
        """The node's state as sinfo prints it ('idle', 'mixed', 'alloc', 'down*', ...); '' when unknown."""
        done = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def squeue(self, job_id=None):
        """Jobs the controller knows, finished ones included: [{'id', 'state', 'reason'}] (one job's, or all)."""
        args = ["squeue", "-h", "-t", "all", "-o", "%i|%T|%r"]
        if job_id is not None:
            args += ["-j", str(job_id)]
        done = self.run(*args, check=False)
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:
                return []
            raise RuntimeError(f"squeue exited with {done.returncode}: {done.stderr.strip()}")
        return [dict(zip(("id", "state", "reason"), line.split("|", 2))) for line in done.stdout.splitlines()]

    def job(self, job_id):
        """`scontrol show job -o JOB` as a dict (JobState, Reason, StartTime, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def requeue_now(self, job_id):
        """Make a requeued (PENDING, Reason=BeginTime) job eligible at once, as an admin would.

        Not in the second of the requeue: slurmd revoked the job's credential then and refuses one created
        in that same second ("Killing non-startable batch JobId=N: Job credential revoked": the job then
        ends FAILED; seen once in a full run).
        """
        time.sleep(REVOKED_CREDENTIAL_SECONDS)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")

    def cancel(self, job_id, signal_name=None):
        """scancel JOB; with signal_name (e.g. 'USR2') only send that signal to its steps."""
        self.run("scancel", *([f"--signal={signal_name}"] if signal_name else []), str(job_id))

    def cancel_all(self, seconds=CANCEL_SECONDS):
        """Cancel every job of the cluster and wait (bounded) until none is pending, running or completing."""
        active = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                  "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            jobs = [j for j in self.squeue() if j["state"] in active]
            if not jobs:
                return
            self.run("scancel", *{j["id"].split("_")[0] for j in jobs}, check=False)
            time.sleep(0.5)

    def sacct(self, job_id):
        """What accounting (slurmdbd) says of a job, as `sacct -X` prints it: [{'id', 'state', 'exit_code'}],
        one per job or array task ('state' e.g. 'COMPLETED', 'CANCELLED by 0', 'TIMEOUT')."""
        out = self.run("sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "JobID,State,ExitCode").stdout
        return [dict(zip(("id", "state", "exit_code"), line.split("|"))) for line in out.splitlines()]

    def logs(self):
        return "\n".join(log_tail(self.folder / "log" / name)
                         for name in ("slurmctld.log", "slurmd.log", "slurmdbd.log", "mariadb.log"))


def client_env(conf):
    return {**os.environ, "SLURM_CONF": str(conf)}


def start(folder):
    """Write the config into `folder`, start munged, MariaDB, slurmdbd, slurmctld and slurmd; wait for an idle node.

    Returns (SlurmCluster, PID of its munged). On failure everything started here is stopped again and
    the error carries the logs' tails.
    """
    reason = slurm_missing()
    if reason:
        raise RuntimeError(reason)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="nn-runner-munge-"))
    socket_dir.chmod(0o755)  # munged wants its socket's folder open to all (it checks)
    save_state(folder, socket_dir)
    munge_socket = socket_dir / "munge.socket"
    conf, node, ports = write_conf(folder, munge_socket)
    password = secrets.token_hex(16)
    write_dbd_conf(folder, ports, password, munge_socket)
    cluster = SlurmCluster(folder, conf, node, client_env(conf))
    try:
        munged = start_munged(folder, munge_socket)
        start_database(folder, ports, password)
        start_slurmdbd(folder, ports, cluster.env)
        for daemon in ("slurmctld", "slurmd"):
            done = subprocess.run([DAEMONS[daemon], "-f", str(conf)], capture_output=True, text=True,
                                  timeout=60, env=cluster.env)
            if done.returncode != 0:
                raise RuntimeError(f"{daemon} -f {conf} exited with {done.returncode}: {done.stderr.strip()}\n"
                                   f"{cluster.logs()}")
        started = time.monotonic()
        while (state := cluster.node_state()) != "idle":
            waited = time.monotonic() - started
            for daemon in ("slurmctld", "slurmd"):
                pid = read_pid(folder / f"{daemon}.pid")
                if (pid is None or not pid_alive(pid)) and waited > 5:  # a PID file may lag the fork a little
                    raise RuntimeError(f"{daemon} is not running\n{cluster.logs()}")
            if waited > START_SECONDS:
                raise RuntimeError(f"node {node} of {conf} is not idle after {START_SECONDS} s "
                                   f"(sinfo says {state!r})\n{cluster.logs()}")
            time.sleep(0.2)
    except BaseException:
        stop(folder)
        raise
    return cluster, munged


def save_state(folder, socket_dir):
    (Path(folder) / STATE_FILE).write_text(json.dumps({"munge_socket_dir": str(socket_dir)}) + "\n")


def stop(folder):
    """Cancel the cluster's jobs, stop slurmd, slurmctld, slurmdbd, MariaDB and munged by PID.

    Returns {program: what happened}.
    """
    folder = Path(folder).resolve()
    conf = folder / "slurm.conf"
    report = {}
    ctld = read_pid(folder / "slurmctld.pid")
    if conf.exists() and ctld is not None and pid_alive(ctld) and pid_is(ctld, "slurmctld"):
        node = next((l.split()[0].split("=", 1)[1] for l in conf.read_text().splitlines()
                     if l.startswith("NodeName=")), "")
        try:
            SlurmCluster(folder, conf, node, client_env(conf)).cancel_all()
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            pass  # the daemons are stopped below whatever the jobs do
        # cancelled job steps end within ~2 s here (their tasks get SIGTERM, SIGKILL after KillWait=30 s)
        deadline = time.monotonic() + CANCEL_SECONDS + 10
        while step_daemons(folder) and time.monotonic() < deadline:
            time.sleep(0.2)
    for daemon in ("slurmd", "slurmctld", "slurmdbd", "mariadbd"):
        pid_file = folder / ("mariadb.pid" if daemon == "mariadbd" else f"{daemon}.pid")
        report[daemon] = stop_pid(read_pid(pid_file), daemon)
    lingering = step_daemons(folder)
    for pid in lingering:  # only when a step outlived its cancellation: its tasks first, then the step
        for task in descendants(pid):
            try:
                os.kill(task, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_pid(pid, "slurmstepd", seconds=5)
    if lingering:
        report["slurmstepd"] = f"{len(lingering)} killed"
    report["munged"] = stop_pid(read_pid(folder / "munge" / "munged.pid"), "munged")
    try:
        socket_dir = json.loads((folder / STATE_FILE).read_text()).get("munge_socket_dir")
    except (OSError, ValueError):
        socket_dir = None
    if socket_dir and Path(socket_dir).name.startswith("nn-runner-munge-"):
        shutil.rmtree(socket_dir, ignore_errors=True)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return report


@contextmanager
def slurm_cluster(folder=None):
    """A running cluster for the `with` block, in `folder` (default: a new temp folder, removed after)."""
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="nn-runner-slurm-")) if own else Path(folder)
    try:
        cluster, _ = start(folder)
        try:
            yield cluster
        finally:
            stop(folder)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


try:
    import pytest
except ImportError:  # `python tests/slurm_cluster.py start` needs no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def slurm():
        """A running single-node Slurm cluster for a test module; skipped where Slurm is not installed."""
        reason = slurm_missing()
        if reason:
            pytest.skip(reason)
        with slurm_cluster() as cluster:
            yield cluster


def main(argv):
    usage = "usage: python tests/slurm_cluster.py start|stop|status FOLDER"
    if len(argv) != 2 or argv[0] not in ("start", "stop", "status"):
        print(usage, file=sys.stderr)
        return 2
    command, folder = argv[0], Path(argv[1]).resolve()
    conf = folder / "slurm.conf"
    ctld = read_pid(folder / "slurmctld.pid")
    running = ctld is not None and pid_alive(ctld) and pid_is(ctld, "slurmctld")
    if command == "start":
        if running:
            print(f"Slurm already running (slurmctld PID {ctld}); use it with:\nexport SLURM_CONF={conf}")
            return 0
        began = time.monotonic()
        try:
            cluster, munged = start(folder)
        except RuntimeError as error:
            print(f"slurm_cluster: {error}", file=sys.stderr)
            return 1
        print(f"Slurm cluster up in {time.monotonic() - began:.1f} s: node {cluster.node} idle in partition "
              f"{cluster.partition} (slurmctld PID {read_pid(folder / 'slurmctld.pid')}, slurmd PID "
              f"{read_pid(folder / 'slurmd.pid')}, munged PID {munged}); "
              f"accounting by slurmdbd (PID {read_pid(folder / 'slurmdbd.pid')}) into MariaDB (PID "
              f"{read_pid(folder / 'mariadb.pid')}); logs in {folder / 'log'}. Use it with:\nexport SLURM_CONF={conf}")
        return 0
    if command == "status":
        if not running:
            print(f"no Slurm cluster running from {folder}")
            return 1
        cluster = SlurmCluster(folder, conf, "", client_env(conf))
        print(cluster.run("sinfo").stdout + cluster.run("squeue").stdout, end="")
        return 0
    if not (folder / "slurmctld.pid").exists() and not (folder / STATE_FILE).exists():
        print(f"no {folder}/slurmctld.pid: no Slurm cluster started there")
        return 0
    report = stop(folder)
    print("Slurm cluster stopped: " + ", ".join(f"{name} {what}" for name, what in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
