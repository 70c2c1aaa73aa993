#!/usr/bin/env python3
"""xgrad against PyTorch on this machine, side by side in one run (./run.sh bench).

Every figure is a median over repeated runs, with xgrad and PyTorch alternating so that machine noise
hits both alike. Prints a readable table and one machine-readable line per figure:
    bench lenet_train_2t xgrad=... torch=... ratio=...
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_BENCH = os.path.join(ROOT, "bench", "torch_bench.py")
TORCH_EPOCH = os.path.join(ROOT, "bench", "torch_train_epoch.py")


def use_build(build_dir):
    """Points the benchmark at the xgrad programs of one build directory (--build-dir)."""
    global BENCH_MODELS, BENCH_CONV, TRAIN
    BENCH_MODELS = os.path.join(build_dir, "bench", "bench_models")
    BENCH_CONV = os.path.join(build_dir, "bench", "bench_conv")
    TRAIN = os.path.join(build_dir, "examples", "train_fashion_mnist")


use_build(os.path.join(ROOT, "build"))
PYTHON = "/usr/bin/python3"  # the interpreter that runs the PyTorch side (--python)


# The environment of every run. OPENBLAS_CORETYPE is set in bench() (--blas-core); one BLAS
# thread, since both frameworks parallelise over the batch with their own threads.
ENV = {"OPENBLAS_NUM_THREADS": "1", **os.environ}
# glibc's malloc hands a large freed block back to the kernel (munmap, or a trim of the heap's top)
# and takes fresh pages for the next one; each first touch of a page is then a page fault, costly on
# a kernel with page-table isolation and no PCID. PyTorch frees and allocates its activations and
# gradients every step: on this project's VM its convnet ran 2-5x slower so, by an amount that
# changed from process to process. "keep" has both frameworks keep freed memory (the largest block
# served by mmap 32 MB, the most kept at the heap's top 4 GB), as a caching allocator would: PyTorch
# at its best (tcmalloc was about level with it, jemalloc 6-8x slower); xgrad, which reuses its
# buffers, level. The peak-RSS runs keep the default, since keeping freed memory is what RSS counts.
MALLOC_SETTINGS = {
    "keep": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296",
    "default": "",
}
DEFAULT_MALLOC_ENV = {}  # the peak-RSS runs' environment: ENV without the malloc setting
OMP_SETTINGS = {
    "default": {},  # filled in main() with the GOMP_SPINCOUNT xgrad's setup_process() chooses
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}


class Progress:
    """A one-line progress bar on stderr, on a terminal only: the runs made of those planned, the
    time so far, an estimate of the time left, and what runs now. close() ends it with a summary
    line, printed everywhere."""

    def __init__(self):
        self.total, self.done, self.start = 0, 0, time.monotonic()
        self.tty, self.shown = sys.stderr.isatty(), False

    def plan(self, runs):
        self.total += runs

    def running(self, cmd, note=""):
        if not self.tty or self.total == 0:
            return
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0
        width = 24
        filled = min(width, width * self.done // self.total)
        bar = "=" * filled + (">" + " " * (width - filled - 1) if filled < width else "")
        clock = lambda s: f"{int(s) // 60}:{int(s) % 60:02d}"
        sys.stderr.write(f"\r\033[K[{bar}] {self.done}/{self.total} runs, {clock(elapsed)} elapsed, "
                         f"ETA {clock(left) if self.done else '?'}  {describe(cmd)}{note}")
        sys.stderr.flush()
        self.shown = True

    def clear(self):
        """Takes the bar off its line, so that what is printed next starts on a clean one."""
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False

    def finished(self):
        self.done += 1

    def close(self):
        self.clear()
        planned = f" (planned {self.total})" if self.done != self.total else ""
        print(f"run_bench: {self.done} runs{planned} in {time.monotonic() - self.start:.0f} s",
              file=sys.stderr)


PROGRESS = Progress()


def say(*args):
    """print() for the results, which go to stdout: the progress bar leaves the line first."""
    PROGRESS.clear()
    print(*args, flush=True)


def describe(cmd):
    """A run in a few words, for the progress bar: the program, and its model, mode, threads,
    batch and split, or that it times the sgemm ceiling."""
    words = [os.path.basename(cmd[1] if cmd[0] == PYTHON else cmd[0])]
    for flag, form in (("--ceiling", "sgemm ceiling"), ("--model", "{}"), ("--mode", "{}"),
                       ("--threads", "{}t"), ("--batch", "batch {}"), ("--split", "{} split")):
        if flag in cmd[:-1]:
            words.append(form.format(cmd[cmd.index(flag) + 1]))
    return " ".join(words)


def failure(cmd, code, stderr):
    """The error of a run that ended with status `code`: the command and the end of its stderr."""
    return RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{stderr[-2000:]}")


def run(cmd):
    """Runs cmd and returns its stdout; a failure raises with the end of its stderr."""
    PROGRESS.running(cmd)
    proc = subprocess.run(cmd, capture_output=True, env=ENV, text=True)
    if proc.returncode != 0:
        raise failure(cmd, proc.returncode, proc.stderr)
    PROGRESS.finished()
    return proc.stdout


def run_concurrently(cmds):
    """Starts every command at once and returns their stdouts, in order, once all have ended; a
    failure raises with the end of its stderr. One run for the progress bar."""
    PROGRESS.running(cmds[0], f", {len(cmds)} at once")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                              text=True) for cmd in cmds]
    outs = [proc.communicate() for proc in procs]
    for cmd, proc, (_, err) in zip(cmds, procs, outs):
        if proc.returncode != 0:
            raise failure(cmd, proc.returncode, err)
    PROGRESS.finished()
    return [out for out, _ in outs]


def run_with_rss(cmd):
    """Runs cmd and returns (stdout, peak RSS in MB) through wait4's resource usage."""
    PROGRESS.running(cmd)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                env=DEFAULT_MALLOC_ENV or ENV, text=True)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise failure(cmd, code, err.read())
    PROGRESS.finished()
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


def cache_line_round_trip():
    """Nanoseconds a cache line takes between the first two CPUs and back (bench_conv
    --round-trip), or None with one CPU."""
    out = run([BENCH_CONV, "--round-trip", "1", "--repeats", "5"])
    m = re.search(r"cache_line_round_trip_ns=([\d.]+)", out)
    return float(m.group(1)) if m else None


def trip_str(ns):
    return "none (one CPU)" if ns is None else f"{ns:.0f} ns"


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
    medians over the repeats of xgrad's median step and of its parts (bench_models' step_us_p50,
    shard_gap_us_p50, after_shards_us_p50, shard_us_p50, start_us_p50, outside_us_p50), in
    microseconds, and of the share of the steps that evicted the parameters from the caches before
    updating them (evicted). Each repeat ends with xgrad on 1 thread at half the smallest batch of
    the band, so that a 2-thread shard's own time can be set against one thread doing the same
    work: returns that run's median step, shard and outside times, and the median over the
    repeats of (the 2-thread shard at the band's smallest batch) / (that shard) - 1."""
    ips = {(who, b): [] for who in ("xgrad", "torch") for b in batches}
    names = ("step_us_p50", "shard_gap_us_p50", "after_shards_us_p50", "shard_us_p50",
             "start_us_p50", "outside_us_p50", "evicted")
    parts = {b: {name: [] for name in names} for b in batches}
    half = min(band) // 2
    alone = {name: [] for name in ("step_us_p50", "shard_us_p50", "outside_us_p50")}
    for _ in range(repeats):
        for b in batches:
            out = run(xgrad_cmd("lenet", "train", 2, b, seconds))
            ips[("xgrad", b)].append(img_per_s(out))
            for name in names:
                parts[b][name].append(field(out, name))
            if have_torch:
                ips[("torch", b)].append(img_per_s(run(torch_cmd("lenet", "train", 2, b, seconds))))
        out = run(xgrad_cmd("lenet", "train", 1, half, seconds))
        for name in alone:
            alone[name].append(field(out, name))
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
    penalty = statistics.median(two / one - 1 for two, one in
                                zip(parts[min(band)]["shard_us_p50"], alone["shard_us_p50"]))
    one_thread = (half, *(statistics.median(v) for v in alone.values()), penalty)
    return medians, paired, of_medians, step_parts, one_thread


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
        say(f"bench {name} xgrad={ours:.1f}{unit} torch={theirs:.1f}{unit} ratio={ours / theirs:.2f}")
    else:
        say(f"bench {name} xgrad={ours:.1f}{unit} torch=missing")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="runs per figure (median reported)")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per run")
    p.add_argument("--conv-repeats", type=int, default=7,
                   help="timed runs per conv figure (bench_conv --repeats)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                   help="the build whose bench_models, bench_conv and train_fashion_mnist run")
    p.add_argument("--python", default=PYTHON,
                   help="the Python interpreter that runs the PyTorch side")
    p.add_argument("--blas-core", default="cpu",
                   help="OPENBLAS_CORETYPE for both frameworks: cpu = chosen for this CPU "
                        "(SkylakeX with AVX-512, Haswell with AVX2), even where the environment "
                        "sets another; inherit = the environment's; or a core's name")
    p.add_argument("--skip-memory", action="store_true", help="skip the full-epoch RSS comparison")
    p.add_argument("--epoch-limit", type=int, default=0,
                   help="the RSS comparison's epoch on the first N training and test images only "
                        "(0: all; a smaller epoch needs less memory, so only all is the figure)")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--omp", choices=sorted(OMP_SETTINGS), default="default",
                   help="OpenMP waiting, the same for both frameworks (both use libgomp): "
                        "default = xgrad's (GOMP_SPINCOUNT 40000 on a quiet machine, else 1000), "
                        "active = spin (best on a quiet machine), passive = sleep")
    p.add_argument("--malloc", choices=sorted(MALLOC_SETTINGS), default="keep",
                   help="glibc malloc for both frameworks' timed runs: keep = keep freed memory "
                        "(GLIBC_TUNABLES, PyTorch at its best), default = glibc's own; the "
                        "peak-RSS runs always use the default")
    p.add_argument("--split", choices=("adaptive", "even"), default="adaptive",
                   help="xgrad's shard split (bench_models --split, xgrad::ShardSplit): adaptive "
                        "follows each thread's measured speed; with it, the 2-thread model figures "
                        "are also measured with the even split, which is bit-reproducible")
    a = p.parse_args()
    for flag, value, least in (("--repeats", a.repeats, 1), ("--conv-repeats", a.conv_repeats, 1),
                               ("--epoch-limit", a.epoch_limit, 0)):
        if value < least:
            p.error(f"{flag} must be at least {least}, not {value}")
    if not (a.seconds > 0 and math.isfinite(a.seconds)):
        p.error(f"--seconds must be positive and finite, not {a.seconds}")
    try:
        bench(a)
    except RuntimeError as e:
        PROGRESS.clear()
        sys.exit(f"run_bench: error: {e}")
    except KeyboardInterrupt:
        PROGRESS.clear()
        sys.exit("run_bench: interrupted")
    except BrokenPipeError:  # stdout's reader has gone (| head): stop quietly, as other tools do
        PROGRESS.clear()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        sys.exit(1)


def bench(a):
    global PYTHON
    PYTHON = a.python
    use_build(a.build_dir)
    SPLIT["xgrad"] = a.split
    for binary in (BENCH_MODELS, BENCH_CONV) + (() if a.skip_memory else (TRAIN,)):
        if not os.path.exists(binary):
            raise RuntimeError(f"{binary} is missing; build first (./run.sh build)")
    # One start of the interpreter both finds PyTorch and says which it is (importing it takes
    # seconds).
    try:
        probe = subprocess.run(
            [PYTHON, "-c", "import torch; print('torch', torch.__version__, "
             "'oneDNN' if torch.backends.mkldnn.is_available() else 'no oneDNN')"],
            env=ENV, capture_output=True, text=True)
        have_torch = probe.returncode == 0
    except OSError:
        have_torch = False
    if not have_torch:
        say(f"run_bench: python3-torch is missing (no 'import torch' in {PYTHON}); printing "
            "xgrad's figures alone")
    torch_runs = 2 if have_torch else 1
    per_repeat = 2 + 3 + (a.split != "even") + (2 if have_torch else 0)  # see thread_pairs
    PROGRESS.plan(4 + (not a.skip_ops) + 4 * a.repeats * per_repeat
                  + (0 if a.skip_scaling else (6 * torch_runs + 1) * a.repeats)
                  + (0 if a.skip_memory else torch_runs))
    inherited = os.environ.get("OPENBLAS_CORETYPE")
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_CORETYPE"):
        ENV.pop(name, None)
    # With these unset, xgrad's setup_process() fills them in for this machine, and its banner says
    # what it chose: the BLAS core for this CPU (xgrad::preferred_blas_core) and how long idle
    # threads spin (GOMP_SPINCOUNT 40000 on a quiet machine, else 1000). PyTorch, which uses the
    # same OpenBLAS and libgomp, gets the same.
    chosen = run([BENCH_MODELS, "--banner"])
    spin = re.search(r"GOMP_SPINCOUNT=(\d+)", chosen)
    if a.omp == "default" and spin:
        OMP_SETTINGS["default"]["GOMP_SPINCOUNT"] = spin.group(1)
    ENV.update(OMP_SETTINGS[a.omp])
    if a.blas_core == "cpu":
        cpu_core = re.search(r"OPENBLAS_CORETYPE=([^,)]+)", chosen)
        core = cpu_core.group(1) if cpu_core and cpu_core.group(1) != "unset" else inherited
    elif a.blas_core == "inherit":
        core = inherited
    else:
        core = a.blas_core
    if core:
        ENV["OPENBLAS_CORETYPE"] = core
    DEFAULT_MALLOC_ENV.update(ENV)
    if MALLOC_SETTINGS[a.malloc]:
        ENV["GLIBC_TUNABLES"] = ":".join(
            t for t in (os.environ.get("GLIBC_TUNABLES", ""), MALLOC_SETTINGS[a.malloc]) if t)
    if inherited and core != inherited:
        say(f"run_bench: OPENBLAS_CORETYPE={inherited} from the environment replaced by {core} "
            f"(--blas-core {a.blas_core}; --blas-core inherit keeps it)")

    banner = run([BENCH_MODELS, "--banner"]).strip()
    say(banner)
    used = re.search(r"BLAS core (\S+)", banner)
    if core and used and used.group(1).lower() != core.lower():
        raise RuntimeError(f"OPENBLAS_CORETYPE={core}: OpenBLAS does not know this core and "
                           f"chose {used.group(1)} (--blas-core cpu chooses for this CPU)")
    if have_torch:
        say(probe.stdout.strip())
    say(f"OPENBLAS_CORETYPE={ENV.get('OPENBLAS_CORETYPE')} OPENBLAS_NUM_THREADS="
        f"{ENV.get('OPENBLAS_NUM_THREADS')} OpenMP {a.omp} {OMP_SETTINGS[a.omp]}; "
        f"malloc {a.malloc} (GLIBC_TUNABLES={ENV.get('GLIBC_TUNABLES', '')}; the peak-RSS runs "
        f"{DEFAULT_MALLOC_ENV.get('GLIBC_TUNABLES', '') or 'default'}); "
        f"medians of {a.repeats} runs, alternating; xgrad's shard split {a.split}; "
        f"load average {os.getloadavg()[0]:.2f}")
    # Where the hypervisor has put the two vCPUs changes within minutes on this project's VM, and
    # the 2-thread figures with it: timed at the start and at the end.
    trips = [cache_line_round_trip()]
    say("cache line round trip between the first two CPUs: " + trip_str(trips[0]))

    if not a.skip_ops:
        say("\n== Conv ops (GFLOP/s, batch 64) ==")
        say(run([BENCH_CONV, "--repeats", str(a.conv_repeats)]).rstrip())

    say("\n== Models, batch 64 (img/s) ==")
    say(f"{'figure':<22}{'xgrad':>10}{'torch':>10}{'ratio':>8}")
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
                say(f"{name:<22}{ours:>10.0f}{(theirs or 0):>10.0f}{ratio}")
    for name, (ours, theirs) in results.items():
        line(name, ours, theirs)
    say("\n== Speed-up from 1 to 2 threads (median of the repeats' own ratios) ==")
    say(f"{'figure':<16}{'xgrad':>8}{'even':>8}{'torch':>8}{'2 procs':>9}{'2 sgemms':>10}")
    fmt = lambda v, width: f"{v:>{width}.2f}" if v else f"{'-':>{width}}"
    for name, ((ours, _), (theirs, _), sgemm, processes, even) in speedups.items():
        say(f"{name:<16}{ours:>8.2f}{fmt(even, 8)}{fmt(theirs, 8)}{processes:>9.2f}{sgemm:>10.2f}")
    for name, ((ours, ours_fast), (theirs, theirs_fast), sgemm, processes, even) in speedups.items():
        say(f"bench {name}_thread_speedup xgrad={ours:.2f}"
            + (f" torch={theirs:.2f}" if theirs else "") + f" sgemm={sgemm:.2f}"
            + f" two_processes={processes:.2f}"
            + (f" xgrad_even_split={even:.2f}" if even else ""))
        say(f"bench {name}_thread_speedup_fastest_steps xgrad={ours_fast:.2f}"
            + (f" torch={theirs_fast:.2f}" if theirs_fast else ""))

    if not a.skip_scaling:
        say("\n== Batch scaling, LeNet-5 training, 2 threads (img/s) ==")
        medians, spread, of_medians, step_parts, one_thread = batch_sweep(
            (1, 8, 32, 64, 128, 256), (32, 64, 128, 256), a.seconds, a.repeats, have_torch)
        for batch, (ours, theirs) in medians.items():
            line(f"lenet_train_2t_batch{batch}", ours, theirs)
        say(f"bench lenet_train_batch32_256_spread xgrad={100 * spread:.1f}%")
        say(f"bench lenet_train_batch32_256_spread_of_medians xgrad={100 * of_medians:.1f}%")
        say("\n-- xgrad's 2-thread step (us, medians; the step is about the sum of the rest): the"
            " time outside the region (zero_grad, the call's set-up and end), the last shard's"
            " start, a shard's own time, the wait for the slower shard, the sums and update after"
            " the shards; and the share of steps that evicted the parameters from the caches"
            " first --")
        for batch, (step, gap, after, shard, start, outside, evicted) in step_parts.items():
            say(f"bench lenet_train_2t_batch{batch}_step_us xgrad={step:.0f} outside={outside:.0f} "
                f"start={start:.1f} shard={shard:.0f} shard_gap={gap:.0f} after_shards={after:.0f} "
                f"evicted={evicted:.2f}")
        half, step, shard, outside, penalty = one_thread
        say(f"-- the same work on 1 thread (batch {half}; outside includes the optimiser's step),"
            f" and how much longer a 2-thread shard of batch {2 * half} took than that --")
        say(f"bench lenet_train_1t_batch{half}_step_us xgrad={step:.0f} outside={outside:.0f} "
            f"shard={shard:.0f}")
        say(f"bench lenet_train_2t_batch{2 * half}_shard_penalty xgrad={100 * penalty:+.1f}%")

    if not a.skip_memory:
        say("\n== Peak RSS, one full LeNet-5 training epoch on Fashion-MNIST ==")
        with tempfile.TemporaryDirectory() as out_dir:
            limit = ["--limit", str(a.epoch_limit), "--test-limit", str(a.epoch_limit)]
            out, ours = run_with_rss([TRAIN, "--epochs", "1", "--threads", "2", "--out", out_dir]
                                     + (limit if a.epoch_limit else []))
        theirs = None
        if have_torch:
            _, theirs = run_with_rss([PYTHON, TORCH_EPOCH, "--threads", "2"]
                                     + (limit[:2] if a.epoch_limit else []))
        line("lenet_epoch_peak_rss_mb", ours, theirs)
    trips.append(cache_line_round_trip())
    say(f"\ncache line round trip between the first two CPUs: {trip_str(trips[0])} at the start, "
        f"{trip_str(trips[1])} at the end")
    if None not in trips:
        say(f"bench cache_line_round_trip_ns start={trips[0]:.0f} end={trips[1]:.0f}")
    PROGRESS.close()


if __name__ == "__main__":
    main()
