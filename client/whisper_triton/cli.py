"""`whisper-triton`: transcribe files and folders, or check a server, from the terminal.

Exit status: 0 all done; 1 some file failed; 2 bad usage; 3 server unreachable/not ready.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, TextIO, Tuple

from ._base import PROTOCOLS, default_url
from .audio_input import AUDIO_EXTENSIONS
from .client import WhisperClient
from .errors import ServerUnavailableError, WhisperError
from .options import OPTIONS, validate
from .result import Transcription
from .writers import FORMATS, format_result

PROG = "whisper-triton"
URL_ENV = "WHISPER_TRITON_URL"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass
class Job:
    source: Path
    output: Optional[Path]  # None: stdout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Speech to text with the Whisper model served by Triton Inference Server."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def connection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", default=None, help=(
            f"server address host:port, or several separated by commas (round-robin with "
            f"failover); default ${URL_ENV}, else localhost:8001 (grpc) / localhost:8000 (http)"))
        sub.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
        sub.add_argument("--timeout", type=float, default=600.0,
                         help="seconds one file may take (default 600)")
        sub.add_argument("--retries", type=int, default=2,
                         help="retries when the server is unavailable or overloaded (default 2)")
        sub.add_argument("--ssl", action="store_true", help="use TLS")
        sub.add_argument("--root-certificates", metavar="PEM", help="CA bundle for TLS")

    run = commands.add_parser("transcribe", help="transcribe audio files and folders")
    run.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS",
                     help="audio files, and folders walked for audio files")
    connection(run)
    decoding_flags(run)
    run.add_argument("--format", "-f", choices=tuple(FORMATS), default="txt")
    run.add_argument("--output-dir", "-o", type=Path, default=None, help=(
        "where output files go; default: stdout for one file, the current folder for several"))
    run.add_argument("--concurrency", "-j", type=int, default=4,
                     help="files in flight at once (default 4)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")

    health = commands.add_parser("health", help="check that the server and model are ready")
    connection(health)
    return parser


def decoding_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the schema (whisper_triton.options.OPTIONS), dest = keyword."""
    group = parser.add_argument_group("decoding options")
    for option in OPTIONS:
        kwargs = {"dest": option.name, "default": option.default, "help": option.help}
        if option.type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=option.type, choices=option.choices)
        group.add_argument(*option.cli_flags, **kwargs)


def _client(args: argparse.Namespace) -> WhisperClient:
    url = args.url or os.environ.get(URL_ENV) or default_url(args.protocol)
    return WhisperClient(url, args.protocol, timeout=args.timeout, retries=args.retries,
                         ssl=args.ssl, root_certificates=args.root_certificates)


def _error(message: str, stream: Optional[TextIO] = None) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=stream or sys.stderr)


# --- inputs and outputs ------------------------------------------------------------------

def collect(paths: Sequence[str]) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(file, name relative to its argument) for every input, and problems found.

    Files named explicitly are taken whatever their extension; folders are walked
    recursively for audio extensions, in sorted order.
    """
    found: List[Tuple[Path, Path]] = []
    problems: List[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                problems.append(f"{raw}: no audio files in this folder")
            found.extend((f, f.relative_to(path)) for f in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            problems.append(f"{raw}: no such file or folder")
    return found, problems


def plan(files: List[Tuple[Path, Path]], fmt: str, output_dir: Optional[Path]) -> List[Job]:
    """Output path per input; one file without --output-dir goes to stdout.

    Folder inputs keep their sub-folders; equal names get -2, -3... instead of overwriting.
    """
    if len(files) == 1 and output_dir is None:
        return [Job(files[0][0], None)]
    base = output_dir or Path(".")
    taken: set = set()
    jobs = []
    for source, relative in files:
        target = base / relative.with_suffix(f".{fmt}")
        n = 2
        while target in taken:
            target = base / relative.with_name(f"{relative.stem}-{n}.{fmt}")
            n += 1
        taken.add(target)
        jobs.append(Job(source, target))
    return jobs


def summary(ok: int, failed: int, audio_seconds: float, wall: float) -> str:
    speed = f"{audio_seconds / wall:.1f}x real time" if wall > 0 else "n/a"
    return (f"{ok + failed} files: {ok} ok, {failed} failed; "
            f"{audio_seconds / 3600:.3f} h of audio in {wall:.1f} s ({speed})")


# --- commands ----------------------------------------------------------------------------

def _options(args: argparse.Namespace) -> dict:
    """The client keywords from the decoding flags, validated once, not once per file."""
    return validate({option.name: getattr(args, option.name) for option in OPTIONS})


def _transcribe_one(client: WhisperClient, job: Job, options: dict, fmt: str) -> Transcription:
    result = client.transcribe(job.source, **options)
    text = format_result(result, fmt)
    if job.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(text, encoding="utf-8")
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, WhisperError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    return str(exc) or type(exc).__name__


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        _error("--concurrency must be at least 1")
        return EXIT_USAGE
    options = _options(args)
    files, problems = collect(args.paths)
    for problem in problems:
        _error(problem)
    if not files:
        return EXIT_FAILED
    jobs = plan(files, args.format, args.output_dir)
    started = time.monotonic()
    with _client(args) as client:
        # One cheap call first, so an unreachable server is one message, not one per file.
        try:
            client.server_metadata()
        except WhisperError as exc:
            _error(exc)
            return EXIT_UNREACHABLE
        ok, failed, audio_seconds = 0, len(problems), 0.0
        unreachable = False
        show = len(jobs) > 1 and not args.quiet
        bar = _progress(len(jobs)) if show else None
        with ThreadPoolExecutor(max_workers=min(args.concurrency, len(jobs))) as pool:
            futures = {pool.submit(_transcribe_one, client, job, options, args.format): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    audio_seconds += future.result().duration
                    ok += 1
                except Exception as exc:  # noqa: BLE001 - one line per failed file
                    failed += 1
                    unreachable = unreachable or isinstance(exc, ServerUnavailableError)
                    message = f"{job.source}: {_describe(exc)}"
                    if bar is not None:
                        bar.write(f"{PROG}: error: {message}", file=sys.stderr)
                    else:
                        _error(message)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    if len(jobs) > 1 and not args.quiet:
        print(summary(ok, failed, audio_seconds, time.monotonic() - started), file=sys.stderr)
    if unreachable:
        return EXIT_UNREACHABLE
    return EXIT_FAILED if failed else EXIT_OK


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # the `cli` extra is optional; work without a bar
        return None
    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)


def cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            server = client.server_metadata()
            model = client.model_metadata()
        except WhisperError as exc:
            _error(exc)
            return EXIT_UNREACHABLE
        ready = client.is_ready()
    versions = ",".join(model.get("versions", [])) or "?"
    state = "ready" if ready else "NOT ready"
    print(f"{', '.join(client.urls)} ({args.protocol}): {server.get('name', 'server')} "
          f"{server.get('version', '?')}; model {model.get('name', client.model_name)} "
          f"(versions {versions}) {state}")
    return EXIT_OK if ready else EXIT_UNREACHABLE


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "health":
            return cmd_health(args)
        return cmd_transcribe(args)
    except WhisperError as exc:  # bad --url, --language...: say so without a traceback
        _error(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
