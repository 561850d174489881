"""Record CPU-only runtimes for the mining detector's labelled set (labels.json).

Each case runs a REAL program on this machine (no GPU, no network: nothing here sends
a packet anywhere; a pool connection is modelled in labels.json as data), started as
a user would start it: from a terminal with ``nohup`` (a ``bash`` root, as a terminal
of the runtime), or from a real IPython kernel (``jupyter_client``; the kernel is the
root). It is sampled every second for ``--seconds`` by the quota daemon's own
``ProcessScanner`` (the runtime = the root and its descendants, ``LocalRoot``), and
each sample is written as one JSON line of what the daemon sees of the runtime:

    {"t": 1.0, "cpu_s": 0.98, "wait_s": 0.02, "rss": 10854400, "minflt": 1301,
     "io_chars": 8512, "storage": 0, "pids": 3, "processes": [[pid, name, cmdline], ...]}

``cpu_s``, ``wait_s`` (runnable, waiting for a CPU), ``minflt``, ``io_chars`` (rchar +
wchar) and ``storage`` (read_bytes + write_bytes) are cumulative, as /proc gives them;
``processes`` and ``connections`` only where they changed.

    .venv/bin/python tests/data/record_cpu_runtimes.py [--seconds 90] [--only NAME] [DIR]

Workloads run at nice -10 (the recording machine is shared) and single-threaded
(``OPENBLAS_NUM_THREADS=1``): a runtime limited to one CPU (the test image's limit;
labels.json says ``cpu_cores: 1``). numpy comes from the system ``python3``
(``--python``); the kernel (this venv's ipykernel) imports it from that interpreter's
site-packages. Re-recording gives other bytes (real timing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernelhub.quotas.runtimes import LocalRoot, Owner, ProcessScanner

HERE = Path(__file__).resolve().parent
# The machine is shared (2 cores, load up to 10 while others benchmark): the workloads
# run at a higher priority, which helps little; the time they wait for a CPU is recorded.
NICE = -10
BLAS_1 = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# A share-finding loop: double SHA-256 of a block header with a nonce, as Bitcoin-style
# miners do; "shares" (24 leading zero bits) are printed, as a miner reports them.
SHA256_MINER = """
import hashlib, os, sys
header, target, nonce = os.urandom(76), 1 << (256 - 24), 0
while True:
    h = hashlib.sha256(hashlib.sha256(header + nonce.to_bytes(4, "little")).digest()).digest()
    if int.from_bytes(h, "big") < target:
        print("epoch", nonce, flush=True)
    nonce += 1
"""
# Litecoin's proof of work: scrypt N=1024, r=1, p=1 (128 KiB per hash).
SCRYPT_MINER = """
import hashlib, os
header, nonce = os.urandom(76), 0
while True:
    h = hashlib.scrypt(header + nonce.to_bytes(4, "little"), salt=header, n=1024, r=1, p=1,
                       dklen=32)
    if h[0] == 0 and h[1] < 16:
        print("batch", nonce, flush=True)
    nonce += 1
"""
C_MINER = r"""
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    unsigned char header[80], h1[32], h2[32];
    memset(header, 7, sizeof header);
    for (unsigned long long nonce = 0;; nonce++) {
        memcpy(header + 76, &nonce, 4);
        SHA256(header, 80, h1);
        SHA256(h1, 32, h2);
        if (!h2[0] && !h2[1] && !h2[2] && h2[3] < 16) {
            printf("step %llu\n", nonce);
            fflush(stdout);
        }
    }
}
"""
# A small MLP trained by minibatch SGD in numpy: the shape of a CPU training job.
# ``data``: "file" loads a dataset written to disk beforehand (np.load), "synthetic"
# makes it in memory; a checkpoint (np.savez) every ``ckpt`` seconds; a log line per 200 steps.
NUMPY_TRAIN = """
import sys, time
sys.path.append({site!r})
import numpy as np
rng = np.random.default_rng(0)
if {data!r} == "file":
    X = np.load("data/x.npy"); y = np.load("data/y.npy")
else:
    X = rng.standard_normal((20000, 256), dtype=np.float32); y = (X[:, :10].sum(1) > 0)
W1 = rng.standard_normal((256, 512), dtype=np.float32) * 0.05
W2 = rng.standard_normal((512, 1), dtype=np.float32) * 0.05
step, last = 0, time.time()
while True:
    idx = rng.integers(0, len(X), 256)
    xb, yb = X[idx], y[idx].astype(np.float32)[:, None]
    h = np.maximum(xb @ W1, 0); p = 1 / (1 + np.exp(-(h @ W2)))
    g = (p - yb) / len(xb); gW2 = h.T @ g; gh = (g @ W2.T) * (h > 0); gW1 = xb.T @ gh
    W1 -= 0.1 * gW1; W2 -= 0.1 * gW2; step += 1
    if step % 200 == 0:
        print("step", step, "loss", float(-np.mean(yb * np.log(p + 1e-7))), flush=True)
    if {ckpt} and time.time() - last > {ckpt}:
        np.savez("ckpt.npz", W1=W1, W2=W2); last = time.time()
"""
# Preprocessing: read shards from disk, normalize, featurize (FFT), write them out.
DATA_LOADER = """
import glob, sys
sys.path.append({site!r})
import numpy as np
while True:
    for path in sorted(glob.glob("data/shard-*.npy")):
        x = np.load(path)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        f = np.abs(np.fft.rfft(x, axis=1)).astype(np.float32)
        np.save(path.replace("data/", "out/"), f)
        print(path, f.shape, flush=True)
"""


def interpreter(python: str) -> tuple[str, str]:
    """The real interpreter behind ``python`` (not a shim) and its numpy's site-packages."""
    code = "import numpy, os, sys; print(sys.executable); print(os.path.dirname(numpy.__path__[0]))"
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    executable, site = run.stdout.split()
    return executable, site


def write_dataset(work: Path, python: str) -> None:
    """Files for the jobs that read data: 8 shards of 4096 x 256 float32 (4 MiB each)."""
    code = (
        "import numpy as np, os\n"
        "os.makedirs('data', exist_ok=True); os.makedirs('out', exist_ok=True)\n"
        "r = np.random.default_rng(1)\n"
        "for i in range(8):\n"
        "    np.save(f'data/shard-{i}.npy', r.standard_normal((4096, 256), dtype=np.float32))\n"
        "x = r.standard_normal((20000, 256), dtype=np.float32); np.save('data/x.npy', x)\n"
        "np.save('data/y.npy', x[:, :10].sum(1) > 0)\n"
    )
    subprocess.run([python, "-c", code], cwd=work, check=True)


class Terminal:
    """``nohup COMMAND &`` typed in a terminal of the runtime (a bash root)."""

    def __init__(self, line: str) -> None:
        self.line = line

    def start(self, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        script = f"nohup {self.line} > nohup.out 2>&1 &\nwait\n"
        argv = ["nice", "-n", str(NICE), "bash", "-c", script]
        return subprocess.Popen(argv, cwd=work, env=env, start_new_session=True)


class Kernel:
    """A real IPython kernel running ``code`` in a cell (busy until stopped, unless the
    cell only starts a background process)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def start(self, work: Path, env: dict[str, str]) -> Any:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(work), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        os.setpriority(os.PRIO_PROCESS, self.km.provisioner.process.pid, NICE)  # type: ignore[union-attr]
        self.kc.execute(self.code)
        return self.km.provisioner.process  # type: ignore[union-attr]


def cases(python: str, site: str) -> dict[str, tuple[Callable[[], Any], Callable[[Path], None]]]:
    def files(**scripts: str) -> Callable[[Path], None]:
        def write(work: Path) -> None:
            for name, text in scripts.items():
                (work / name.replace("_py", ".py")).write_text(text)

        return write

    def compiled(name: str) -> Callable[[Path], None]:
        def build(work: Path) -> None:
            (work / "m.c").write_text(C_MINER)
            subprocess.run(
                ["gcc", "-O2", "-o", str(work / name), "m.c", "-lcrypto"], cwd=work, check=True
            )

        return build

    def copy(binary: str, name: str) -> Callable[[Path], None]:
        return lambda work: shutil.copy(shutil.which(binary) or binary, work / name)

    train = NUMPY_TRAIN.format(site=site, data="file", ckpt=30)
    synthetic = NUMPY_TRAIN.format(site=site, data="synthetic", ckpt=0)
    loader = DATA_LOADER.format(site=site)
    popen = (
        "import subprocess\nsubprocess.Popen([{!r}, 'prepare_data.py'], stdout=open('log', 'w'))"
    )
    return {
        "cpu_sha256_as_train_py": (
            lambda: Terminal(f"{python} train.py --epochs 100"),
            files(train_py=SHA256_MINER),
        ),
        "cpu_scrypt_from_kernel": (
            lambda: Kernel(popen.format(python)),
            files(prepare_data_py=SCRYPT_MINER),
        ),
        "cpu_c_sha256_renamed": (
            lambda: Terminal("bash -c 'exec -a python3 ./python3 worker.py --resume'"),
            compiled("python3"),
        ),
        "cpu_openssl_renamed": (
            lambda: Terminal("bash -c 'exec -a python3 ./python3 speed -seconds 20 sha256'"),
            copy("openssl", "python3"),
        ),
        "cpu_sha256_in_kernel": (lambda: Kernel(SHA256_MINER), files()),
        "cpu_numpy_train_nohup": (
            lambda: Terminal(f"{python} train.py --epochs 20"),
            files(train_py=train),
        ),
        "cpu_numpy_inmem_nohup": (
            lambda: Terminal(f"{python} train.py --epochs 20"),
            files(train_py=synthetic),
        ),
        "cpu_numpy_train_kernel": (lambda: Kernel(train), files()),
        "cpu_data_loading_nohup": (
            lambda: Terminal(f"{python} preprocess.py --shards data/"),
            files(preprocess_py=loader),
        ),
    }


def record(name: str, runner: Any, process: Any, seconds: float, out: Path) -> None:
    scanner = ProcessScanner(connections=True)
    root = process.pid
    start = int(Path(f"/proc/{root}/stat").read_text().rpartition(")")[2].split()[19])
    roots = {root: LocalRoot(start, Owner("recorder", name, "cpu"))}
    began, previous, connections = time.monotonic(), None, []
    with out.open("w", encoding="utf-8") as f:
        for i in range(int(seconds) + 1):
            time.sleep(max(0.0, began + i - time.monotonic()))
            usage = scanner.scan(roots).get(f"recorder/{name}")
            if usage is None:
                break
            line: dict[str, Any] = {
                "t": round(time.monotonic() - began, 2),
                "cpu_s": round(usage.cpu_seconds, 2),
                "wait_s": None
                if usage.cpu_wait_seconds is None
                else round(usage.cpu_wait_seconds, 2),
                "rss": usage.rss_bytes,
                "minflt": usage.minor_faults,
                "io_chars": usage.io_chars,
                "storage": usage.storage_bytes,
                "pids": len(usage.pids),
            }
            if usage.processes != previous:
                line["processes"] = previous = usage.processes
            if usage.connections != connections:
                line["connections"] = connections = usage.connections
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    scanner.close()
    kill = [p for p, _, _ in (previous or []) if p != root] + [root]
    for pid in kill:  # the processes this script started, by their ids
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if isinstance(runner, Kernel):
        runner.kc.stop_channels()
        runner.km.shutdown_kernel(now=True)
    else:
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=HERE)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--only", action="append", help="record only this case (repeatable)")
    parser.add_argument("--python", default=shutil.which("python3") or "python3")
    args = parser.parse_args()
    executable, site = interpreter(args.python)
    # "python3" on the PATH is that interpreter: command lines read as a user types them
    path = f"{Path(executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **BLAS_1, "PATH": path}
    for name, (make, prepare) in cases("python3", site).items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"rec-{name}-") as tmp:
            work = Path(tmp)
            write_dataset(work, executable)
            prepare(work)
            runner = make()
            process = runner.start(work, env)
            print(f"recording {name} ({args.seconds:g} s)", file=sys.stderr, flush=True)
            record(name, runner, process, args.seconds, args.directory / f"{name}.jsonl")


if __name__ == "__main__":
    main()
