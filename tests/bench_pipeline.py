#!/usr/bin/env python3
"""ctest's check of ./run.sh bench end to end (bench/run_bench.py, bench_models, bench_conv and,
where it is installed, PyTorch's side), with runs far too short to mean anything about speed: every
figure the full benchmark prints must come out, once, with positive finite numbers, and bad input
must end with a one-line error, never a traceback. No timing is asserted.

    bench_pipeline.py --build-dir BUILD --case without_torch|with_torch|bad_input

Exit status 77 (ctest's SKIP_RETURN_CODE) when the case cannot run here: with_torch without
python3-torch.
"""
import argparse
import math
import os
import re
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_BENCH = os.path.join(ROOT, "bench", "run_bench.py")
QUICK = ["--repeats", "1", "--seconds", "0.02", "--conv-repeats", "1", "--omp", "passive"]
# The peak-RSS epoch reads Debian's Fashion-MNIST: a short one where it is installed, else none.
DATA = "/usr/share/datasets/fashion-mnist"
HAVE_DATA = all(os.path.exists(os.path.join(DATA, f"train-{part}-idx{dims}-ubyte.gz"))
                for part, dims in (("images", 3), ("labels", 1)))
EPOCH = ["--epoch-limit", "640"] if HAVE_DATA else ["--skip-memory"]
SKIP = 77

MODELS = [f"{m}_{mode}" for m in ("lenet", "convnet") for mode in ("train", "infer")]
LAYERS = ("lenet_conv1", "lenet_conv2", "convnet_conv1", "convnet_conv2")
PASSES = ("fwd", "bwd_data", "bwd_weights")
BATCHES = (1, 8, 32, 64, 128, 256)

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def run_bench(args, env=None):
    proc = subprocess.run([sys.executable, RUN_BENCH] + args, capture_output=True, text=True,
                          env=env)
    return proc.returncode, proc.stdout, proc.stderr


def figures(stdout):
    """{name: {key: value}} from the `bench name key=value ...` lines; a name twice is a failure."""
    found = {}
    for m in re.finditer(r"^bench (\S+) (.*)$", stdout, re.M):
        name = m.group(1)
        check(name not in found, f"figure {name} printed twice")
        found[name] = dict(kv.split("=", 1) for kv in m.group(2).split())
    return found


def number(text, what):
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        check(False, f"{what} is {text!r}, not a number")
        return math.nan
    check(math.isfinite(value), f"{what} is {text}")
    return value


def expect(found, name, keys, positive=()):
    """Figure `name` has exactly `keys`, each a finite number, those in `positive` above zero."""
    if name not in found:
        check(False, f"figure {name} is missing")
        return {}
    got = found[name]
    check(sorted(got) == sorted(keys), f"{name} has keys {sorted(got)}, expected {sorted(keys)}")
    values = {}
    for key in keys:
        if key in got and got[key] != "missing":
            values[key] = number(got[key], f"{name} {key}")
            if key in positive:
                check(values[key] > 0, f"{name} {key} is {got[key]}, expected above 0")
    return values


def check_figures(stdout, torch):
    found = figures(stdout)
    # Both frameworks' timed runs keep freed memory (run_bench --malloc keep, the default).
    check("malloc keep (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:" in stdout,
          "the header does not name the malloc setting")
    side = ["torch", "ratio"] if torch else ["torch"]
    compared = []
    for model in MODELS:
        for suffix in ("1t", "2t", "2t_even"):
            compared.append(f"{model}_{suffix}")
        speedup = ["xgrad", "sgemm", "two_processes", "xgrad_even_split"] + (["torch"] if torch else [])
        expect(found, f"{model}_thread_speedup", speedup, positive=speedup)
        fast = ["xgrad"] + (["torch"] if torch else [])
        expect(found, f"{model}_thread_speedup_fastest_steps", fast, positive=fast)
    for batch in BATCHES:
        compared.append(f"lenet_train_2t_batch{batch}")
        step = expect(found, f"lenet_train_2t_batch{batch}_step_us",
                      ["xgrad", "outside", "start", "shard", "shard_gap", "after_shards", "evicted"],
                      positive=["xgrad", "shard"])
        check(0 <= step.get("evicted", 0) <= 1, f"batch {batch}: the evicted share is not one")
        # Every step contains its shards' own time, its region's start and what lies outside it.
        check(step.get("xgrad", 0) >= step.get("shard", 0) and step.get("outside", 0) >= 0
              and step.get("start", 0) >= 0, f"batch {batch}: the step's parts do not fit: {step}")
        if batch == 1:  # one image makes one shard: nothing to start, wait for, sum or evict
            check(step.get("shard_gap") == 0 and step.get("after_shards") == 0
                  and step.get("evicted") == 0 and step.get("start") == 0,
                  f"batch 1 has one shard, yet its step reports {step}")
    alone = expect(found, "lenet_train_1t_batch16_step_us", ["xgrad", "outside", "shard"],
                   positive=["xgrad", "shard"])
    check(alone.get("xgrad", 0) >= max(alone.get("shard", 0), alone.get("outside", 0)),
          f"one thread's step is shorter than one of its parts: {alone}")
    expect(found, "lenet_train_2t_batch32_shard_penalty", ["xgrad"])
    for name in compared:
        values = expect(found, name, ["xgrad"] + side, positive=["xgrad"] + side)
        if torch and {"xgrad", "torch", "ratio"} <= values.keys():
            ratio = values["xgrad"] / values["torch"]
            check(abs(values["ratio"] - ratio) <= 0.006 * ratio + 0.005,
                  f"{name}: ratio={values['ratio']} but xgrad/torch = {ratio:.3f}")
        if not torch:
            check(found.get(name, {}).get("torch") == "missing",
                  f"{name} should say torch=missing without PyTorch")
    for name in ("lenet_train_batch32_256_spread", "lenet_train_batch32_256_spread_of_medians"):
        expect(found, name, ["xgrad"])
    for layer in LAYERS:
        for p in PASSES:
            for t in (1, 2):
                keys = ["gflops", "pct_of_sgemm", "pct_of_layer_gemm", "best_gflops"]
                expect(found, f"conv_{layer}_{p}_{t}t", keys, positive=keys)
    for t in (1, 2):
        expect(found, f"sgemm_1024_{t}t", ["gflops"], positive=["gflops"])
    if HAVE_DATA:
        expect(found, "lenet_epoch_peak_rss_mb", ["xgrad"] + side, positive=["xgrad"] + side)
    if len(os.sched_getaffinity(0)) >= 2:
        expect(found, "cache_line_round_trip_ns", ["start", "end"], positive=["start", "end"])
    else:
        check("cache line round trip between the first two CPUs: none (one CPU)" in stdout,
              "with one CPU, no word that there is no round trip to time")


def check_ended_well(code, stderr):
    check(code == 0, f"run_bench exited with {code}:\n{stderr[-2000:]}")
    runs = re.search(r"^run_bench: (\d+) runs( \(planned \d+\))? in \d+ s$", stderr, re.M)
    check(runs is not None, f"no summary line on stderr:\n{stderr[-2000:]}")
    if runs:
        check(runs.group(2) is None, f"the progress bar's plan was wrong: {runs.group(0)}")


def without_torch(build_dir):
    with tempfile.TemporaryDirectory() as tmp:
        python = os.path.join(tmp, "no-such-python3")
        # An OPENBLAS_CORETYPE inherited from the environment gives way to this CPU's own.
        env = dict(os.environ, OPENBLAS_CORETYPE="Prescott")
        code, out, err = run_bench(QUICK + EPOCH + ["--build-dir", build_dir, "--python", python],
                                   env)
    check_ended_well(code, err)
    check("python3-torch is missing" in out, "no word that PyTorch is missing")
    core = re.search(r"^xgrad: BLAS core (\S+) \(OPENBLAS_CORETYPE=(\S+?)[,)]", out, re.M)
    check(core is not None, f"no banner naming the BLAS core:\n{out[:2000]}")
    if core and core.group(2) != "Prescott":
        check(f"OPENBLAS_CORETYPE=Prescott from the environment replaced by {core.group(2)}" in out,
              "the inherited OPENBLAS_CORETYPE was replaced without a word")
    check_figures(out, torch=False)


def with_torch(build_dir):
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        print("python3-torch is not installed: skipped")
        sys.exit(SKIP)
    code, out, err = run_bench(QUICK + EPOCH + ["--build-dir", build_dir])
    check_ended_well(code, err)
    check("python3-torch is missing" not in out, "PyTorch is installed, yet reported missing")
    check_figures(out, torch=True)


def fails_cleanly(args, status, message):
    code, out, err = run_bench(args)
    check(code == status, f"{args}: exit status {code}, expected {status}")
    check(message in err, f"{args}: stderr lacks {message!r}:\n{err[-2000:]}")
    check("Traceback" not in err, f"{args}: a traceback instead of an error line:\n{err[-2000:]}")


def bad_input(build_dir):
    fails_cleanly(["--repeats", "0"], 2, "--repeats must be at least 1, not 0")
    fails_cleanly(["--conv-repeats", "-3"], 2, "--conv-repeats must be at least 1, not -3")
    fails_cleanly(["--epoch-limit", "-1"], 2, "--epoch-limit must be at least 0, not -1")
    fails_cleanly(["--seconds", "0"], 2, "--seconds must be positive and finite, not 0.0")
    fails_cleanly(["--seconds", "nan"], 2, "--seconds must be positive and finite, not nan")
    fails_cleanly(["--seconds", "inf"], 2, "--seconds must be positive and finite, not inf")
    fails_cleanly(["--split", "sideways"], 2, "--split")
    fails_cleanly(["--malloc", "forever"], 2, "--malloc")
    fails_cleanly(["--no-such-flag"], 2, "--no-such-flag")
    fails_cleanly(QUICK + ["--skip-ops", "--skip-scaling", "--skip-memory", "--python",
                           "/no-such-python3", "--build-dir", build_dir, "--blas-core", "Widget"],
                  1, "OPENBLAS_CORETYPE=Widget: OpenBLAS does not know this core")
    # Its reader gone after one line (as with | head -1): it stops without a traceback.
    proc = subprocess.Popen([sys.executable, RUN_BENCH] + QUICK + [
        "--skip-ops", "--skip-scaling", "--skip-memory", "--python", "/no-such-python3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait()
    check("Traceback" not in err, f"a closed stdout gave a traceback:\n{err[-2000:]}")
    with tempfile.TemporaryDirectory() as tmp:
        fails_cleanly(["--build-dir", tmp], 1, os.path.join(tmp, "bench", "bench_models") +
                      " is missing; build first")
        # A benchmark program that fails: its status and the end of its stderr are passed on.
        os.makedirs(os.path.join(tmp, "bench"))
        for name in ("bench_models", "bench_conv"):
            path = os.path.join(tmp, "bench", name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\necho 'bench_models: error: out of widgets' >&2\nexit 3\n")
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        fails_cleanly(QUICK + ["--skip-memory", "--build-dir", tmp], 1,
                      "failed (3):\nbench_models: error: out of widgets")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", required=True)
    p.add_argument("--case", required=True, choices=("without_torch", "with_torch", "bad_input"))
    a = p.parse_args()
    {"without_torch": without_torch, "with_torch": with_torch, "bad_input": bad_input}[a.case](
        a.build_dir)
    for f in failures:
        print("FAILED:", f)
    print(f"{a.case}: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
