#!/usr/bin/python3
"""An independent safetensors reader (python3 + numpy only) used to check xgrad's checkpoints.

    read_safetensors.py FILE                 print every tensor and the metadata
    read_safetensors.py FILE --expect SPEC   compare against SPEC, a JSON file:
        {"tensors": {"name": {"dtype": "F32", "shape": [2, 3], "values": [...]}, ...},
         "metadata": {"key": "value", ...}}
      values are compared exactly after conversion to the tensor's dtype.

Exit status: 0 when the file is valid (and matches SPEC), 1 on any problem, 2 on bad usage.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError("header length %d beyond file size %d" % (n, len(raw)))
    if (8 + n) % 8 != 0:
        raise ValueError("data section not 8-byte aligned (header length %d)" % n)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise ValueError("metadata %r is not a string" % k)
    tensors = {}
    spans = []
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * dtype.itemsize or not 0 <= begin <= end <= len(data):
            raise ValueError("tensor %r: offsets [%d,%d] do not fit %s %s" %
                             (name, begin, end, info["dtype"], list(shape)))
        spans.append((begin, end, name))
        tensors[name] = (info["dtype"],
                         np.frombuffer(data[begin:end], dtype=dtype).reshape(shape))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise ValueError("tensor %r: gap or overlap at offset %d" % (name, begin))
        at = end
    if at != len(data):
        raise ValueError("%d bytes after the last tensor" % (len(data) - at))
    return tensors, metadata


def compare(tensors, metadata, spec):
    problems = []
    want = spec.get("tensors", {})
    if sorted(want) != sorted(tensors):
        problems.append("names differ: file %s, expected %s" % (sorted(tensors), sorted(want)))
    for name, w in want.items():
        if name not in tensors:
            continue
        dtype, arr = tensors[name]
        if dtype != w["dtype"]:
            problems.append("%s: dtype %s, expected %s" % (name, dtype, w["dtype"]))
        if list(arr.shape) != list(w["shape"]):
            problems.append("%s: shape %s, expected %s" % (name, list(arr.shape), w["shape"]))
            continue
        expect = np.array(w["values"], dtype=DTYPES[w["dtype"]]).reshape(arr.shape)
        if not np.array_equal(arr, expect):
            bad = np.argwhere(arr != expect)
            i = tuple(bad[0])
            problems.append("%s: %d values differ, first at %s: %r vs expected %r" %
                            (name, len(bad), list(i), arr[i], expect[i]))
    if "metadata" in spec and spec["metadata"] != metadata:
        problems.append("metadata %r, expected %r" % (metadata, spec["metadata"]))
    return problems


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--expect"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        tensors, metadata = read(argv[1])
    except Exception as e:  # any parse failure is a finding, not a crash
        print("read_safetensors: %s: %s" % (argv[1], e))
        return 1
    if len(argv) == 2:
        for name, (dtype, arr) in tensors.items():
            print("%s %s %s %s" % (name, dtype, list(arr.shape), arr.ravel().tolist()))
        print("__metadata__ %s" % json.dumps(metadata, sort_keys=True))
        return 0
    with open(argv[3]) as f:
        spec = json.load(f)
    problems = compare(tensors, metadata, spec)
    for p in problems:
        print("read_safetensors: mismatch: " + p)
    if problems:
        return 1
    print("read_safetensors: %d tensors and %d metadata entries match" %
          (len(tensors), len(metadata)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
