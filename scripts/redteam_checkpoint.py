"""Red-team cases for checkpoints, run folders, corpora and output files (loaded by scripts/redteam.py).

Each case gets a private working folder and a copy of a tiny trained run, damages or misuses something the
way a user (or an attacker handing over a checkpoint) could, runs charlm, and returns None when charlm
behaved: a one-line `error:` on stderr, a non-zero exit, no traceback, no crash, and no file of the user's
touched. Otherwise it returns what went wrong. The helpers here (editing checkpoint.json, rewriting a tensor
file with its digest updated) are also what the tests use to build the same damage.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- running charlm


@dataclass
class Result:
    code: int | str  # the exit status, or "crash: ..." when it died of a signal / raised out of main
    out: str
    err: str


class _Captured(io.BytesIO):
    """A byte buffer that keeps what was written even once closed (charlm may close stdout on a broken pipe)."""

    data = b""

    def close(self) -> None:
        if not self.closed:
            self.data = self.getvalue()
        super().close()

    def flush(self) -> None:
        if not self.closed:
            self.data = self.getvalue()


def charlm(args: list[str], cwd: Path, stdin: bytes = b"", subprocess_: bool = False, timeout: float = 120) -> Result:
    """Run `charlm ARGS` in `cwd`: in this process (fast), or in a child process where it might crash."""
    if subprocess_:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        try:
            p = subprocess.run(
                [sys.executable, "-m", "charlm", *args],
                cwd=cwd,
                input=stdin,
                capture_output=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return Result(f"crash: still running after {timeout:.0f}s", "", "")
        code: int | str = p.returncode if p.returncode >= 0 else f"crash: killed by signal {-p.returncode}"
        return Result(code, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    from charlm.cli import main

    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, os.getcwd()
    out, err = _Captured(), _Captured()
    sys.argv = ["charlm", *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    code: int | str = 0
    try:
        os.chdir(cwd)
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 (a case reports whatever escaped)
        sys.stderr.write(traceback.format_exc())
        code = "crash: an exception escaped main()"
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError):  # closed by charlm after a broken pipe
                stream.flush()
        out.flush()
        err.flush()
        sys.argv, sys.stdin, sys.stdout, sys.stderr, cwd_was = saved
        os.chdir(cwd_was)
    return Result(code, out.data.decode(errors="replace"), err.data.decode(errors="replace"))


def refused(r: Result, says: str = "", code: int | None = None) -> str | None:
    """None when `r` is a clean refusal: non-zero status, exactly one `error:` line, no traceback."""
    lines = r.err.strip().splitlines()
    if isinstance(r.code, str):
        return f"{r.code}; stderr: {r.err.strip()[-300:]!r}"
    if r.code == 0:
        return f"accepted (exit 0); stderr: {r.err.strip()[-200:]!r}"
    if "Traceback" in r.err or len(lines) != 1 or not lines[0].startswith("error: "):
        return f"exit {r.code} with {len(lines)} line(s) on stderr: {r.err.strip()[-300:]!r}"
    if code is not None and r.code != code:
        return f"exit {r.code}, expected {code}: {lines[0]}"
    if says and says not in lines[0]:
        return f"the error does not say {says!r}: {lines[0]}"
    return None


def worked(r: Result) -> str | None:
    if r.code != 0:
        return f"exit {r.code}: {r.err.strip()[-300:]!r}"
    if "Traceback" in r.err:
        return f"a traceback at exit 0: {r.err.strip()[-300:]!r}"
    return None


# ---------------------------------------------------------------- damaging checkpoints


def steps(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("step-*") if p.is_dir())


def edit_meta(step: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    f = step / "checkpoint.json"
    meta = json.loads(f.read_text())
    change(meta)
    f.write_text(json.dumps(meta))


def write_meta_text(step: Path, text: str) -> None:
    (step / "checkpoint.json").write_text(text)


def rewrite_tensors(step: Path, name: str, change: Callable[[dict[str, Any]], Any], fix_digest: bool = True) -> None:
    """Load a tensor file as torch tensors, let `change` edit the dict, write it back, and record its new
    SHA-256 in checkpoint.json, so the damage passes the checksum (as a deliberate edit would)."""
    from safetensors.torch import load, save

    f = step / name
    tensors = load(f.read_bytes())
    change(tensors)
    data = save(tensors)
    f.write_bytes(data)
    if fix_digest:
        edit_meta(step, lambda m: m.setdefault("sha256", {}).update({name: hashlib.sha256(data).hexdigest()}))


def write_raw_safetensors(step: Path, name: str, header: dict[str, Any], body: bytes) -> None:
    """A tensor file from a header (as given, however wrong) and body, with its digest recorded."""
    h = json.dumps(header).encode()
    data = struct.pack("<Q", len(h)) + h + body
    (step / name).write_bytes(data)
    edit_meta(step, lambda m: m.setdefault("sha256", {}).update({name: hashlib.sha256(data).hexdigest()}))


def tiny_text(lines: int = 300) -> str:
    import random

    rng = random.Random(0)
    words = ["the cat", "a dog", "sees", "likes", "the moon", "fish", "猫"]
    return "\n".join(" ".join(rng.choice(words) for _ in range(4)) + "." for _ in range(lines)) + "\n"


TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16"]
TINY += ["--device", "cpu", "--precision", "fp32"]


def train_tiny(corpus: Path, out: Path, *extra: str, cwd: Path | None = None) -> Result:
    args = ["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "6", "--eval-every", "3", "-q", *extra]
    return charlm(args, cwd or out.parent)


# ---------------------------------------------------------------- the cases: checkpoint.json


def _on_latest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda run: [edit_meta(s, change) for s in steps(run)]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def change(m: dict[str, Any]) -> None:
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key, None)


def _huge(f: Path) -> None:
    """A checkpoint.json of 65 MB (sparse: cheap to make)."""
    with open(f, "wb") as fh:
        fh.write(b"{")
        fh.truncate(65 << 20)


META_DAMAGE: dict[str, Callable[[Path], None]] = {
    "metrics-as-list": _on_latest(_set("metrics", [1, 2])),
    "val_bpc-string": _on_latest(_set("metrics.val_bpc", "low")),
    "version-string": _on_latest(_set("version", "1")),
    "seq_len-string": _on_latest(_set("train.seq_len", "x")),
    "lr-null": _on_latest(_set("train.lr", None)),
    "offset-string": _on_latest(_set("data.offset", "x")),
    "code-point-surrogate": _on_latest(lambda m: m["vocab"]["code_points"].__setitem__(-1, 0xD800)),
    "hidden-4000-layers-4": _on_latest(lambda m: m["model"].update(hidden=4000, layers=4)),
    "hidden-100000-layers-100": _on_latest(lambda m: m["model"].update(hidden=100000, layers=100)),
    "step-infinity": lambda run: [
        write_meta_text(s, (s / "checkpoint.json").read_text().replace('"step": ', '"step": Infinity, "x": ', 1))
        for s in steps(run)
    ],
    "code-point-1e300": lambda run: [
        write_meta_text(
            s,
            json.dumps(json.loads((s / "checkpoint.json").read_text())).replace(
                '"code_points": [', '"code_points": [1e300, ', 1
            ),
        )
        for s in steps(run)
    ],
    "deep-json": lambda run: [write_meta_text(s, "[" * 100_000 + "]" * 100_000) for s in steps(run)],
    "5000-digit-int": lambda run: [
        write_meta_text(
            s, (s / "checkpoint.json").read_text().replace('"step": ', '"step": ' + "9" * 5000 + ', "y": ', 1)
        )
        for s in steps(run)
    ],
    "huge-file": lambda run: [_huge(s / "checkpoint.json") for s in steps(run)],
}
META_RESUME_DAMAGE: dict[str, Callable[[Path], None]] = {
    "data-missing": _on_latest(_drop("data")),
    "offset-1e9": _on_latest(_set("data.offset", 10**9)),
    "offset-negative": _on_latest(_set("data.offset", -32)),
    "optimizer-missing": _on_latest(_drop("optimizer")),
}


def _meta_case(damage: Callable[[Path], None], command: str) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        damage(run)
        args = {"sample": ["sample", str(run), "--length", "5"], "info": ["info", str(run)]}[command]
        return refused(charlm(args, work))

    return case


def _resume_case(damage: Callable[[Path], None]) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        damage(run)
        return refused(charlm(["train", "--resume", "--out", str(run), "--max-steps", "200", "-q"], work))

    return case


# ---------------------------------------------------------------- the cases: tensor files


def _moment(scale: int) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        k = next(k for k in sorted(t) if k.endswith("exp_avg") and t[k].numel() > 64)
        t[k] = t[k].flatten()[: t[k].numel() // 8].clone() if scale < 0 else t[k].repeat(2, *[1] * (t[k].dim() - 1))

    return change


def _state_case(change: Callable[[dict[str, Any]], None], crashed: bool = False) -> Callable[[Path, Path], str | None]:
    """Resume from damaged optimizer state; in a child process where the damage once crashed charlm."""

    def case(work: Path, run: Path) -> str | None:
        rewrite_tensors(steps(run)[-1], "state.safetensors", change)
        args = ["train", "--resume", "--out", str(run), "--max-steps", "200", "-q"]
        return refused(charlm(args, work, subprocess_=crashed), "state.safetensors")

    return case


def _weights_case(
    change: Callable[[dict[str, Any]], None], command: str, ok: bool = False
) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        for s in steps(run):
            rewrite_tensors(s, "model.safetensors", change)
        (work / "t.txt").write_text("the cat sees fish.\n")
        args = {
            "sample": ["sample", str(run), "--length", "20", "--seed", "1"],
            "evaluate": ["evaluate", str(run), "t.txt"],
        }
        r = charlm(args[command], work)
        return worked(r) if ok else refused(r, "model.safetensors")

    return case


def _nan(t: dict[str, Any]) -> None:
    t["head.weight"][0, 0] = float("nan")


def _inf(t: dict[str, Any]) -> None:
    t["embed.weight"][1, 1] = float("-inf")


def _bf16(t: dict[str, Any]) -> None:
    import torch

    for k in t:
        t[k] = t[k].to(torch.bfloat16)


def _int_weights(t: dict[str, Any]) -> None:
    import torch

    t["head.bias"] = t["head.bias"].to(torch.int32)


def _header_case(make: Callable[[Path], tuple[dict[str, Any], bytes]]) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        for s in steps(run):
            header, body = make(s)
            write_raw_safetensors(s, "model.safetensors", header, body)
        return refused(charlm(["sample", str(run), "--length", "5"], work))

    return case


def _shifted(delta: int) -> Callable[[Path], tuple[dict[str, Any], bytes]]:
    """The real header with the first tensor's offsets moved by `delta` (negative, past the end...)."""

    def make(step: Path) -> tuple[dict[str, Any], bytes]:
        data = (step / "model.safetensors").read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        first = next(k for k in header if k != "__metadata__")
        a, b = header[first]["data_offsets"]
        header[first]["data_offsets"] = [a + delta, b + delta]
        return header, data[8 + n :]

    return make


def _huge_shape(step: Path) -> tuple[dict[str, Any], bytes]:
    data = (step / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["head.bias"]["shape"] = [1 << 40]
    return header, data[8 + n :]


# ---------------------------------------------------------------- the cases: run folders and output files


def _user_folder(work: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder of the user's own that looks like a run folder to a careless eye."""
    folder = work / "mine"
    files = {
        "step-00000000/notes.txt": b"my notes\n",
        ".old-step-00000004-1/a.txt": b"keep\n",
        ".trash-step-notes/b.txt": b"keep too\n",
        "data/ids.json": b'{"mine": true}\n',
        "metrics.jsonl": b'{"my": "log"}\n',
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder, files


def _untouched(folder: Path, files: dict[str, bytes]) -> str | None:
    for name, data in files.items():
        f = folder / name
        if not f.exists() or f.read_bytes() != data:
            return f"{name} in the user's folder was changed or deleted"
    return None


def case_out_onto_user_folder(work: Path, run: Path) -> str | None:
    folder, files = _user_folder(work)
    (work / "c.txt").write_text(tiny_text())
    r = train_tiny(work / "c.txt", folder, cwd=work)
    return refused(r, "not a charlm run folder", 2) or _untouched(folder, files)


def case_resume_onto_user_folder(work: Path, run: Path) -> str | None:
    folder, files = _user_folder(work)
    r = charlm(["train", "--resume", "--out", str(folder), "-q"], work)
    return refused(r) or _untouched(folder, files)


def case_prune_skips_user_files_in_run(work: Path, run: Path) -> str | None:
    """A user's folders inside a real run, named like charlm's hidden copies, survive a resumed run's clean-up."""
    files = {".trash-step-notes/b.txt": b"keep\n", ".tmp-step-00000001-5/mine.txt": b"mine\n"}
    for name, data in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    (run / "linked").mkdir()
    (run / "linked" / "x.txt").write_text("linked")
    os.symlink(run / "linked", run / ".trash-step-00000002-9")
    r = charlm(
        ["train", "--resume", "--out", str(run), "--max-steps", "12", "--save-every", "1", "--keep", "1", "-q"], work
    )
    return worked(r) or _untouched(run, files) or (None if (run / "linked" / "x.txt").exists() else "followed a link")


def _corpus_and_page(work: Path) -> None:
    (work / "t.txt").write_text("the cat sees fish.\n")


def _html_case(target: Callable[[Path, Path], Path], expect_ok: bool = False) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        _corpus_and_page(work)
        dest = target(work, run)
        before = dest.read_bytes() if dest.exists() else None
        r = charlm(["explain", str(run), "t.txt", "--html", str(dest), "-q"], work)
        if expect_ok:
            return worked(r)
        problem = refused(r, code=2)
        if problem is None and (dest.read_bytes() if dest.exists() else None) != before:
            problem = f"{dest.name} was written although charlm refused"
        return problem

    return case


def _png_case(target: Callable[[Path, Path], Path]) -> Callable[[Path, Path], str | None]:
    def case(work: Path, run: Path) -> str | None:
        dest = target(work, run)
        before = dest.read_bytes()
        r = charlm(["plot", str(run), "-o", str(dest), "-q"], work)
        return refused(r, code=2) or (None if dest.read_bytes() == before else f"{dest.name} was overwritten")

    return case


def _user_file(work: Path, run: Path) -> Path:
    (work / "mine.html").write_text("<html>my page</html>")
    return work / "mine.html"


def _weights_file(work: Path, run: Path) -> Path:
    return steps(run)[-1] / "model.safetensors"


def _the_input(work: Path, run: Path) -> Path:
    return work / "t.txt"


def _hard_link_to_input(work: Path, run: Path) -> Path:
    os.link(work / "t.txt", work / "alias.html")
    return work / "alias.html"


def _symlink_to_user_file(work: Path, run: Path) -> Path:
    (work / "mine.txt").write_text("mine")
    os.symlink(work / "mine.txt", work / "link.html")
    return work / "link.html"


def case_html_over_own_page(work: Path, run: Path) -> str | None:
    """A page charlm wrote may be written again."""
    _corpus_and_page(work)
    first = charlm(["explain", str(run), "t.txt", "--html", "p.html", "-q"], work)
    return worked(first) or worked(charlm(["explain", str(run), "t.txt", "--html", "p.html", "-q"], work))


def case_two_trains_at_once(work: Path, run: Path) -> str | None:
    """Two `train --out SAME` at once: one trains, the other is refused, and the winner's ids stay its own."""
    (work / "a.txt").write_text(tiny_text(400))
    (work / "b.txt").write_text(tiny_text(200).upper())
    out = work / "same"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "charlm",
                "train",
                str(work / n),
                "--out",
                str(out),
                *TINY,
                "--max-steps",
                "10",
                "--eval-every",
                "5",
                "-q",
            ],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
        )
        for n in ("a.txt", "b.txt")
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(c for c, _ in results)
    if codes[0] != 0:
        return f"no run succeeded: {results}"
    if codes[1] == 0:  # the second began after the first had finished: it must have been refused, not trained
        return "both trains succeeded in one folder"
    from charlm import checkpoint as ckpt_io

    ck = ckpt_io.resolve(out)
    winner = ck.meta["data"]["sources"][0]
    meta = json.loads((out / "data" / "ids.json").read_text())
    if meta["stamp"]["files"][0]["path"] != winner:
        return "the loser's encoding replaced the winner's data/ids"
    return None


def case_corpus_changed_in_place(work: Path, run: Path) -> str | None:
    """A corpus edited with its size and modification time kept is noticed by --resume."""
    c = work / "c.txt"
    c.write_text(tiny_text())
    out = work / "r"
    if (p := worked(train_tiny(c, out, cwd=work))) is not None:
        return p
    st = c.stat()
    text = c.read_text()
    c.write_text(text.replace("cat", "cow"))
    os.utime(c, ns=(st.st_atime_ns, st.st_mtime_ns))
    return refused(charlm(["train", "--resume", "--out", str(out), "--max-steps", "12", "-q"], work), "corpus differs")


def case_readers_while_pruning(work: Path, run: Path) -> str | None:
    """sample while another thread saves and prunes checkpoints of the same run (as --keep 1 does)."""
    from charlm import checkpoint as ckpt_io

    stop, problems = threading.Event(), []
    src = steps(run)[-1]
    meta = json.loads((src / "checkpoint.json").read_text())

    def churn() -> None:
        from safetensors.torch import load

        w, s = load((src / "model.safetensors").read_bytes()), load((src / "state.safetensors").read_bytes())
        step = 1000
        while not stop.is_set():
            step += 1
            ckpt_io.save(run, {**meta, "step": step}, w, s)
            ckpt_io.prune(run, 1)
            time.sleep(0.005)  # a tiny model with --save-every 1 saves about this often

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not problems:
            model, _ = ckpt_io.load_model(ckpt_io.resolve(run))
            r = charlm(["sample", str(run), "--length", "3", "-q"], work)
            if (p := worked(r)) is not None:
                problems.append(p)
    except Exception as e:  # noqa: BLE001
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        stop.set()
        t.join(10)
    return problems[0] if problems else None


def case_encoding_disk_full(work: Path, run: Path) -> str | None:
    """The disk fills while the corpus is encoded: one line saying so, and no half-written id file left."""
    from charlm.data import encode

    (work / "c.txt").write_text(tiny_text())
    real = encode._write_chunk

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    encode._write_chunk = full  # type: ignore[assignment]
    try:
        r = train_tiny(work / "c.txt", work / "r", cwd=work)
    finally:
        encode._write_chunk = real  # type: ignore[assignment]
    left = [str(p.relative_to(work)) for p in (work / "r").rglob("*")] if (work / "r").exists() else []
    return refused(r, "the disk is full") or (f"left behind {left}" if left else None)


def case_nul_after_8k(work: Path, run: Path) -> str | None:
    (work / "c.txt").write_bytes(tiny_text().encode() * 3 + b"\x00" + b"more text\n")
    return refused(train_tiny(work / "c.txt", work / "r", cwd=work), "NUL", 2)


def case_resume_with_model_options(work: Path, run: Path) -> str | None:
    r = charlm(["train", "--resume", "--out", str(run), "--hidden", "64", "--cell", "lstm", "-q"], work)
    return refused(r, "--hidden", 2)


def case_init_from_vocab_grows(work: Path, run: Path) -> str | None:
    """Fine-tuning on text with new characters: the vocabulary grows and training starts."""
    (work / "new.txt").write_text(tiny_text().replace("a", "ä") + "ÅÖ\n")
    r = charlm(
        [
            "train",
            "new.txt",
            "--init-from",
            str(run),
            "--out",
            "ft",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "16",
            "-q",
        ],
        work,
    )
    return worked(r)


def case_init_from_weights_missing(work: Path, run: Path) -> str | None:
    for s in steps(run):
        rewrite_tensors(s, "model.safetensors", lambda t: t.pop("embed.weight"))
    (work / "new.txt").write_text(tiny_text())
    r = charlm(["train", "new.txt", "--init-from", str(run), "--out", "ft", "--max-steps", "2", "-q"], work)
    return refused(r, "embed.weight")


def case_ema_state_damaged(work: Path, run: Path) -> str | None:
    """A run that averages its weights keeps the trained weights in state.safetensors: a short one is refused."""
    (work / "c.txt").write_text(tiny_text())
    out = work / "r"
    if (p := worked(train_tiny(work / "c.txt", out, "--ema", "0.9", cwd=work))) is not None:
        return p

    def shrink(t: dict[str, Any]) -> None:
        t["trained.head.bias"] = t["trained.head.bias"][:2].clone()

    rewrite_tensors(steps(out)[-1], "state.safetensors", shrink)
    r = charlm(["train", "--resume", "--out", str(out), "--max-steps", "12", "-q"], work)
    return refused(r, "trained.head.bias")


def case_metrics_broken_line(work: Path, run: Path) -> str | None:
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n"x"\n{"step": "a", "val_bpc": "b"}\n\xff\xfe\n')
    return worked(charlm(["info", str(run)], work))


def case_ids_json_empty_list(work: Path, run: Path) -> str | None:
    (run / "data" / "ids.json").write_text("[]")
    return worked(charlm(["train", "--resume", "--out", str(run), "--max-steps", "102", "-q"], work))


def case_ids_out_of_range(work: Path, run: Path) -> str | None:
    import numpy as np

    ids = np.load(run / "data" / "ids.npy", mmap_mode="r+")
    ids[5] = np.iinfo(ids.dtype).max
    ids.flush()
    del ids
    return worked(charlm(["train", "--resume", "--out", str(run), "--max-steps", "102", "-q"], work))


def case_stale_ids_file_removed(work: Path, run: Path) -> str | None:
    stale = run / "data" / ".ids-999999.npy"
    stale.write_bytes(b"\x93NUMPY half written")
    r = charlm(["train", "--resume", "--out", str(run), "--max-steps", "101", "-q"], work)
    return worked(r) or ("the stale id file is still there" if stale.exists() else None)


def case_step_vanishes_while_listing(work: Path, run: Path) -> str | None:
    from charlm.checkpoint import runs

    real = Path.stat

    def vanishing(self: Path, *a: Any, **k: Any) -> Any:
        if self.name.startswith("step-") and self.parent.parent.name == "checkpoints":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))
        return real(self, *a, **k)

    (work / "checkpoints").mkdir()
    shutil.copytree(run, work / "checkpoints" / "a")
    shutil.copytree(run, work / "checkpoints" / "b")
    Path.stat = vanishing  # type: ignore[method-assign]
    try:
        found = runs.find_runs(work / "checkpoints")
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        Path.stat = real  # type: ignore[method-assign]
    return None if found == [] else f"listed {found}"


# ---------------------------------------------------------------- the list

Case = tuple[str, bool, Callable[[Path, Path], "str | None"]]

CASES: list[Case] = [
    *[(f"meta-{name}-sample", True, _meta_case(d, "sample")) for name, d in META_DAMAGE.items()],
    *[
        (f"meta-{name}-info", name in ("metrics-as-list", "val_bpc-string", "version-string"), _meta_case(d, "info"))
        for name, d in META_DAMAGE.items()
    ],
    *[(f"meta-{name}-resume", True, _resume_case(d)) for name, d in META_RESUME_DAMAGE.items()],
    ("state-moment-smaller", True, _state_case(_moment(-1), crashed=True)),
    ("state-moment-larger", False, _state_case(_moment(1))),
    (
        "state-moment-wrong-dtype",
        False,
        _state_case(lambda t: t.update({k: t[k].double() for k in t if k.endswith("exp_avg_sq")})),
    ),
    ("state-rng-short", False, _state_case(lambda t: t.update({"rng.cpu": t["rng.cpu"][:10].clone()}))),
    ("weights-nan-sample", True, _weights_case(_nan, "sample")),
    ("weights-nan-evaluate", True, _weights_case(_nan, "evaluate")),
    ("weights-inf-evaluate", False, _weights_case(_inf, "evaluate")),
    ("weights-int-sample", False, _weights_case(_int_weights, "sample")),
    ("weights-bf16-sample", True, _weights_case(_bf16, "sample", ok=True)),
    ("weights-bf16-evaluate", True, _weights_case(_bf16, "evaluate", ok=True)),
    ("header-negative-offset", True, _header_case(_shifted(-8))),
    ("header-offset-past-end", False, _header_case(_shifted(1 << 20))),
    ("header-huge-shape", True, _header_case(_huge_shape)),
    ("out-onto-user-folder", True, case_out_onto_user_folder),
    ("resume-onto-user-folder", True, case_resume_onto_user_folder),
    ("prune-skips-user-files-in-run", False, case_prune_skips_user_files_in_run),
    ("html-over-user-file", True, _html_case(_user_file)),
    ("html-over-weights", True, _html_case(_weights_file)),
    ("html-over-input", True, _html_case(_the_input)),
    ("html-over-hard-link-to-input", True, _html_case(_hard_link_to_input)),
    ("html-through-symlink", True, _html_case(_symlink_to_user_file)),
    ("html-over-own-page", True, case_html_over_own_page),
    ("png-over-user-file", True, _png_case(_user_file)),
    ("png-over-weights", False, _png_case(_weights_file)),
    ("two-trains-at-once", False, case_two_trains_at_once),
    ("corpus-changed-in-place", True, case_corpus_changed_in_place),
    ("readers-while-pruning", False, case_readers_while_pruning),
    ("encoding-disk-full", True, case_encoding_disk_full),
    ("nul-after-8k", True, case_nul_after_8k),
    ("resume-with-model-options", True, case_resume_with_model_options),
    ("init-from-vocab-grows", False, case_init_from_vocab_grows),
    ("init-from-weights-missing", True, case_init_from_weights_missing),
    ("ema-state-damaged", False, case_ema_state_damaged),
    ("metrics-broken-lines", True, case_metrics_broken_line),
    ("ids-json-empty-list", False, case_ids_json_empty_list),
    ("ids-out-of-range", False, case_ids_out_of_range),
    ("stale-ids-file-removed", False, case_stale_ids_file_removed),
    ("step-vanishes-while-listing", True, case_step_vanishes_while_listing),
]
