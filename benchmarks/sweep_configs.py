"""Per-job Hydra cost in the batched launcher, in process: composing a job's config, and Hydra's run_job.

Composition: Hydra's load_sweep_config (what every launcher's jobs cost) against DerivedConfigs
(hydra_plugins/nn_runner_batched_launcher/derived_configs.py) for the jobs of a seed sweep,
interleaved job by job. run_job: Hydra's run_job around a task function that does nothing, as the
batched launcher calls it (with its configure_log after each job), and the parts run_job is made of,
each timed alone on the same configs. Prints medians in ms per job and the ratio.
Usage: python benchmarks/sweep_configs.py [--jobs 128]
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobRuntime, _save_config, configure_log, run_job
from hydra.types import HydraContext, RunMode
from omegaconf import open_dict

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
from machine import print_load, print_machine  # this folder is on the path when the script runs
from runner.config import CONFIG_DIR


def ms(seconds):
    return f"{1000 * statistics.median(seconds):7.2f} ms"


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=128)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as folder, initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra/launcher=batched", f"hydra.sweep.dir={folder}",
                                                      f"seed=range(0,{args.jobs})"], run_mode=RunMode.MULTIRUN)
        jobs = [[f"seed={seed}"] for seed in range(args.jobs)]
        derived_configs = DerivedConfigs(loader, loader.load_sweep_config)
        derived_configs.load_sweep_config(master, jobs[0])  # the one job Hydra composes
        composing, deriving, configs = [], [], []
        for job in jobs[1:]:
            composing.append(timed(loader.load_sweep_config, master, job)[0])
            seconds, cfg = timed(derived_configs.load_sweep_config, master, job)
            deriving.append(seconds)
            configs.append(cfg)
        print(f"composing a job's config, {len(jobs) - 1} jobs of a seed sweep, medians:")
        print(f"  Hydra's load_sweep_config  {ms(composing)}")
        print(f"  DerivedConfigs             {ms(deriving)}   {statistics.median(composing) / statistics.median(deriving):.1f}x faster")

        JobRuntime.instance().set("name", "app")
        HydraConfig.instance().set_config(master)
        context = HydraContext(config_loader=loader, callbacks=Callbacks())
        parts = {name: [] for name in ("run_job + configure_log (launcher)", "  HydraConfig.set_config x2",
                                       "  copy.deepcopy x2", "  3 .hydra/ YAML files", "  configure_log x2")}
        for num, cfg in enumerate(configs):
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = num
            start = time.perf_counter()
            run_job(hydra_context=context, config=cfg, task_function=lambda task_cfg: 0.0,
                    job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(master.hydra.hydra_logging, master.hydra.verbose)
            parts["run_job + configure_log (launcher)"].append(time.perf_counter() - start)
            before = copy.deepcopy(cfg)  # as run_job had it: its output_dir set
            start = time.perf_counter()
            HydraConfig.instance().set_config(before)
            HydraConfig.instance().set_config(before)
            parts["  HydraConfig.set_config x2"].append(time.perf_counter() - start)
            start = time.perf_counter()
            copy.deepcopy(before)
            copy.deepcopy(HydraConfig.instance().cfg)
            parts["  copy.deepcopy x2"].append(time.perf_counter() - start)
            out = Path(folder, "parts")
            start = time.perf_counter()
            _save_config(before, "config.yaml", out)
            _save_config(HydraConfig.instance().cfg, "hydra.yaml", out)
            _save_config(before.hydra.overrides.task, "overrides.yaml", out)
            parts["  3 .hydra/ YAML files"].append(time.perf_counter() - start)
            start = time.perf_counter()
            configure_log(before.hydra.job_logging, before.hydra.verbose)
            configure_log(master.hydra.hydra_logging, master.hydra.verbose)
            parts["  configure_log x2"].append(time.perf_counter() - start)
        HydraConfig.instance().set_config(master)
        print("Hydra's run_job per job around a task that does nothing, medians (parts timed alone):")
        for name, seconds in parts.items():
            print(f"  {name:<38} {ms(seconds)}")
    print_load("after")


if __name__ == "__main__":
    main()
