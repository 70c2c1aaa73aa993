#!/usr/bin/env python3
"""xgrad against PyTorch on this machine, side by side in one run (./run.sh bench).

Every figure is a median over repeated runs, with xgrad and PyTorch alternating so that machine noise
hits both alike. Prints a readable table and one machine-readable line per figure:
    bench lenet_train_2t xgrad=... torch=... ratio=...
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
BENCH_MODELS = os.path.join(BUILD, "bench", "bench_models")
BENCH_CONV = os.path.join(BUILD, "bench", "bench_conv")
TRAIN = os.path.join(BUILD, "examples", "train_fashion_mnist")
TORCH_BENCH = os.path.join(ROOT, "bench", "torch_bench.py")
TORCH_EPOCH = os.path.join(ROOT, "bench", "torch_train_epoch.py")
PYTHON = "/usr/bin/python3"


def blas_env():
    env = dict(os.environ)
    if "OPENBLAS_CORETYPE" not in env:
        flags = open("/proc/cpuinfo").read()
        if re.search(r"\bavx512f\b", flags):
            env["OPENBLAS_CORETYPE"] = "SkylakeX"
        elif re.search(r"\bavx2\b", flags):
            env["OPENBLAS_CORETYPE"] = "Haswell"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


ENV = blas_env()
OMP_SETTINGS = {
    "default": {},  # filled in main() with the GOMP_SPINCOUNT xgrad's setup_process() chooses
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def run(cmd):
    """Runs cmd and returns its stdout; a failure raises with the end of its stderr."""
    proc = subprocess.run(cmd, capture_output=True, env=ENV, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_concurrently(cmds):
    """Starts every command at once and returns their stdouts, in order, once all have ended; a
    failure raises with the end of its stderr."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                              text=True) for cmd in cmds]
    outs = [proc.communicate() for proc in procs]
    for cmd, proc, (_, err) in zip(cmds, procs, outs):
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return [out for out, _ in outs]


def run_with_rss(cmd):
    """Runs cmd and returns (stdout, peak RSS in MB) through wait4's resource usage."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return out, usage.ru_maxrss / 1024.0


def field(out, name):
    """The last value of `name=<number>` in a run's output."""
    values = [float(v) for v in re.findall(name + r"=([0-9.]+)", out)]
    if not values:
        raise RuntimeError(f"no {name} in output:\n" + out)
    return values[-1]


def step_p10(out):
    """The 10th percentile of a run's step times, in microseconds."""
    return field(out, "step_us_p10")


def gflops(out):
    return field(out, "gflops")


def img_per_s(out):
    return field(out, "img_per_s")


SPLIT = {"xgrad": "adaptive"}  # the shard split of xgrad's runs (--split); "xgrad_even": even


def xgrad_cmd(model, mode, threads, batch, seconds, who="xgrad"):
    split = SPLIT.get(who, "even")
    return [BENCH_MODELS, "--model", model, "--mode", mode, "--threads", str(threads),
            "--batch", str(batch), "--seconds", str(seconds), "--split", split]


def torch_cmd(model, mode, threads, batch, seconds):
    return [PYTHON, TORCH_BENCH, "--model", model, "--mode", mode, "--threads", str(threads),
            "--batch", str(batch), "--seconds", str(seconds)]


def batch_sweep(batches, band, seconds, repeats, have_torch):
    """LeNet-5 training at 2 threads at each batch size. Each repeat runs every batch size back to
    back (xgrad, then PyTorch), so that the batch sizes are compared within a repeat: on this VM,
    whose speed drifts within minutes, measuring each batch size's repeats together compared the
    minutes as much as the batch sizes. The spread across `band` is the largest deviation of a
    batch size from the others, each deviation (img/s against the median of the band's img/s in
    the same repeat) the median over the repeats. Returns the medians of img/s per batch size, and
    the spread both that way and, as before, of the medians. Also returns, per batch size, the
    medians over the repeats of xgrad's median step, of how long its first shard to end waited
    for the last, and of the sums and update after the shards (bench_models' step_us_p50,
    shard_gap_us_p50, after_shards_us_p50), in microseconds."""
    ips = {(who, b): [] for who in ("xgrad", "torch") for b in batches}
    names = ("step_us_p50", "shard_gap_us_p50", "after_shards_us_p50")
    parts = {b: {name: [] for name in names} for b in batches}
    for _ in range(repeats):
        for b in batches:
            out = run(xgrad_cmd("lenet", "train", 2, b, seconds))
            ips[("xgrad", b)].append(img_per_s(out))
            for name in names:
                parts[b][name].append(field(out, name))
            if have_torch:
                ips[("torch", b)].append(img_per_s(run(torch_cmd("lenet", "train", 2, b, seconds))))
    medians = {b: (statistics.median(ips[("xgrad", b)]),
                   statistics.median(ips[("torch", b)]) if have_torch else None) for b in batches}
    deviations = {b: [] for b in band}
    for r in range(repeats):
        mid = statistics.median(ips[("xgrad", b)][r] for b in band)
        for b in band:
            deviations[b].append(ips[("xgrad", b)][r] / mid - 1)
    paired = max(abs(statistics.median(d)) for d in deviations.values())
    mid = statistics.median(medians[b][0] for b in band)
    of_medians = max(abs(medians[b][0] / mid - 1) for b in band)
    step_parts = {b: tuple(statistics.median(parts[b][name]) for name in names) for b in batches}
    return medians, paired, of_medians, step_parts


def thread_pairs(model, mode, batch, seconds, repeats, have_torch, speedups):
    """1 and 2 threads side by side: each repeat runs xgrad on 1 then 2 threads, then PyTorch on 2
    then 1, so that each pair compared (1t with 2t, xgrad with PyTorch at 2t) runs back to back.
    The 1->2 thread speed-up is the median of the repeats' own ratios: on a VM whose speed drifts
    within minutes, a ratio of medians taken minutes apart would measure the drift. Beside it, the
    speed-up of the fastest steps (10th percentiles of the step times): this VM's vCPUs each go
    through phases about 1.5x slower, and a 2-thread step waits for the slower thread. Each repeat
    also times the sgemm ceiling (bench_conv --ceiling) on 1 and 2 threads first: two independent
    sgemms, the machine's own speed-up for work that needs no synchronisation at that moment.
    After xgrad's 1-thread run comes the same model in two 1-thread processes at once, each with
    half the batch: their summed img/s over the 1-thread run's is the speed-up this workload gets
    from the machine when nothing is shared, no gradients are summed and no thread waits for the
    other, the ceiling for the sharded 2-thread step.
    With the adaptive split (--split adaptive), xgrad's 2-thread run is followed by one with the
    even split ("xgrad_even"), for comparison."""
    ips = {("xgrad", 1): [], ("xgrad", 2): [], ("torch", 1): [], ("torch", 2): []}
    compare_even = SPLIT["xgrad"] != "even"
    if compare_even:
        ips[("xgrad_even", 2)] = []
    p10 = {key: [] for key in ips}
    sgemm, processes = [], []
    for _ in range(repeats):
        one, two = (gflops(run([BENCH_CONV, "--ceiling", "1", "--threads", str(t), "--repeats", "3"]))
                    for t in (1, 2))
        sgemm.append(two / one)
        runs = ([("xgrad", 1), ("xgrad", 2)] + ([("xgrad_even", 2)] if compare_even else [])
                + ([("torch", 2), ("torch", 1)] if have_torch else []))
        for who, threads in runs:
            if who == "torch":
                out = run(torch_cmd(model, mode, threads, batch, seconds))
            else:
                out = run(xgrad_cmd(model, mode, threads, batch, seconds, who))
            ips[(who, threads)].append(img_per_s(out))
            p10[(who, threads)].append(step_p10(out))
            if (who, threads) == ("xgrad", 1):
                pair = run_concurrently([xgrad_cmd(model, mode, 1, batch // 2, seconds)] * 2)
                processes.append(sum(img_per_s(out) for out in pair) / ips[(who, threads)][-1])

    def speedup(who, one_thread=None):
        one_thread = one_thread or who
        if not ips[(one_thread, 1)]:
            return None, None
        by_ips = statistics.median(b / a for a, b in zip(ips[(one_thread, 1)], ips[(who, 2)]))
        by_steps = statistics.median(a / b for a, b in zip(p10[(one_thread, 1)], p10[(who, 2)]))
        return by_ips, by_steps

    even = speedup("xgrad_even", "xgrad")[0] if compare_even else None
    speedups[f"{model}_{mode}"] = (speedup("xgrad"), speedup("torch"), statistics.median(sgemm),
                                   statistics.median(processes), even)
    median = lambda v: statistics.median(v) if v else None
    results = {f"{model}_{mode}_{t}t": (median(ips[("xgrad", t)]), median(ips[("torch", t)]))
               for t in (1, 2)}
    if compare_even:
        results[f"{model}_{mode}_2t_even"] = (median(ips[("xgrad_even", 2)]),
                                               median(ips[("torch", 2)]))
    return results


def line(name, ours, theirs, unit=""):
    if theirs:
        print(f"bench {name} xgrad={ours:.1f}{unit} torch={theirs:.1f}{unit} ratio={ours / theirs:.2f}")
    else:
        print(f"bench {name} xgrad={ours:.1f}{unit} torch=missing")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="runs per figure (median reported)")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per run")
    p.add_argument("--skip-memory", action="store_true", help="skip the full-epoch RSS comparison")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--omp", choices=sorted(OMP_SETTINGS), default="default",
                   help="OpenMP waiting, the same for both frameworks (both use libgomp): "
                        "default = xgrad's (GOMP_SPINCOUNT 40000 on a quiet machine, else 1000), "
                        "active = spin (best on a quiet machine), passive = sleep")
    p.add_argument("--split", choices=("adaptive", "even"), default="adaptive",
                   help="xgrad's shard split (bench_models --split, xgrad::ShardSplit): adaptive "
                        "follows each thread's measured speed; with it, the 2-thread model figures "
                        "are also measured with the even split, which is bit-reproducible")
    a = p.parse_args()
    SPLIT["xgrad"] = a.split
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        ENV.pop(name, None)
    if a.omp == "default" and os.path.exists(BENCH_MODELS):
        # setup_process() spins longer on a quiet machine (GOMP_SPINCOUNT 40000, else 1000);
        # PyTorch, which uses the same libgomp, gets the same setting.
        spin = re.search(r"GOMP_SPINCOUNT=(\d+)", run([BENCH_MODELS, "--banner"]))
        if spin:
            OMP_SETTINGS["default"]["GOMP_SPINCOUNT"] = spin.group(1)
    ENV.update(OMP_SETTINGS[a.omp])

    for binary in (BENCH_MODELS, BENCH_CONV):
        if not os.path.exists(binary):
            sys.exit(f"run_bench: {binary} is missing; build first (./run.sh build)")
    try:
        subprocess.run([PYTHON, "-c", "import torch"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        have_torch = True
    except (subprocess.CalledProcessError, FileNotFoundError):
        have_torch = False
        print("run_bench: python3-torch is missing; printing xgrad's figures alone")

    print(run([BENCH_MODELS, "--banner"]).strip())
    if have_torch:
        print(run([PYTHON, "-c", "import torch; print('torch', torch.__version__, "
                   "'oneDNN' if torch.backends.mkldnn.is_available() else 'no oneDNN')"]).strip())
    print(f"OPENBLAS_CORETYPE={ENV.get('OPENBLAS_CORETYPE')} OPENBLAS_NUM_THREADS="
          f"{ENV.get('OPENBLAS_NUM_THREADS')} OpenMP {a.omp} {OMP_SETTINGS[a.omp]}; "
          f"medians of {a.repeats} runs, alternating; xgrad's shard split {a.split}; "
          f"load average {os.getloadavg()[0]:.2f}")

    if not a.skip_ops:
        print("\n== Conv ops (GFLOP/s, batch 64) ==")
        print(run([BENCH_CONV]).rstrip())

    print("\n== Models, batch 64 (img/s) ==")
    print(f"{'figure':<22}{'xgrad':>10}{'torch':>10}{'ratio':>8}")
    results, speedups = {}, {}
    for model in ("lenet", "convnet"):
        for mode in ("train", "infer"):
            results.update(thread_pairs(model, mode, 64, a.seconds, a.repeats, have_torch, speedups))
            for suffix in ("1t", "2t", "2t_even"):
                name = f"{model}_{mode}_{suffix}"
                if name not in results:
                    continue
                ours, theirs = results[name]
                ratio = f"{ours / theirs:8.2f}" if theirs else "       -"
                print(f"{name:<22}{ours:>10.0f}{(theirs or 0):>10.0f}{ratio}")
    for name, (ours, theirs) in results.items():
        line(name, ours, theirs)
    print("\n== Speed-up from 1 to 2 threads (median of the repeats' own ratios) ==")
    print(f"{'figure':<16}{'xgrad':>8}{'even':>8}{'torch':>8}{'2 procs':>9}{'2 sgemms':>10}")
    fmt = lambda v, width: f"{v:>{width}.2f}" if v else f"{'-':>{width}}"
    for name, ((ours, _), (theirs, _), sgemm, processes, even) in speedups.items():
        print(f"{name:<16}{ours:>8.2f}{fmt(even, 8)}{fmt(theirs, 8)}{processes:>9.2f}{sgemm:>10.2f}")
    for name, ((ours, ours_fast), (theirs, theirs_fast), sgemm, processes, even) in speedups.items():
        print(f"bench {name}_thread_speedup xgrad={ours:.2f}"
              + (f" torch={theirs:.2f}" if theirs else "") + f" sgemm={sgemm:.2f}"
              + f" two_processes={processes:.2f}"
              + (f" xgrad_even_split={even:.2f}" if even else ""))
        print(f"bench {name}_thread_speedup_fastest_steps xgrad={ours_fast:.2f}"
              + (f" torch={theirs_fast:.2f}" if theirs_fast else ""))

    if not a.skip_scaling:
        print("\n== Batch scaling, LeNet-5 training, 2 threads (img/s) ==")
        medians, spread, of_medians, step_parts = batch_sweep(
            (1, 8, 32, 64, 128, 256), (32, 64, 128, 256), a.seconds, a.repeats, have_torch)
        for batch, (ours, theirs) in medians.items():
            line(f"lenet_train_2t_batch{batch}", ours, theirs)
        print(f"bench lenet_train_batch32_256_spread xgrad={100 * spread:.1f}%")
        print(f"bench lenet_train_batch32_256_spread_of_medians xgrad={100 * of_medians:.1f}%")
        print("\n-- xgrad's 2-thread step (us, medians): the wait for the slower shard, the sums and"
              " update after the shards --")
        for batch, (step, gap, after) in step_parts.items():
            print(f"bench lenet_train_2t_batch{batch}_step_us xgrad={step:.0f} shard_gap={gap:.0f} "
                  f"after_shards={after:.0f}")

    if not a.skip_memory:
        print("\n== Peak RSS, one full LeNet-5 training epoch on Fashion-MNIST ==")
        with tempfile.TemporaryDirectory() as out_dir:
            out, ours = run_with_rss([TRAIN, "--epochs", "1", "--threads", "2", "--out", out_dir])
        theirs = None
        if have_torch:
            _, theirs = run_with_rss([PYTHON, TORCH_EPOCH, "--threads", "2"])
        line("lenet_epoch_peak_rss_mb", ours, theirs)


if __name__ == "__main__":
    main()
