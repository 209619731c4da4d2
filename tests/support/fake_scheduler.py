"""A stand-in for a batch scheduler (Slurm's sbatch/squeue/scancel), run as a real
command by `CommandBatchEndpoint`, and driven by the test through files.

    python fake_scheduler.py --state DIR submit --input IN --output OUT --model M
        records a job (state PENDING) and prints "Submitted batch job <id>"; exits 1
        without recording one while DIR/refuse-submissions exists
    python fake_scheduler.py --state DIR status <id>
        prints the job's state line (e.g. "RUNNING", "FAILED out of memory") and counts
        the question in DIR/jobs/<id>/polls; exits 1 for an unknown job
    python fake_scheduler.py --state DIR cancel <id>
        marks the job CANCELLED

Nothing runs a job by itself: the test decides when it runs (`set_state`), finishes
(`finish` writes the output file from the input file, as vLLM's batch runner would, then
COMPLETED) or fails (`fail`), so every state change happens when the test says.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()


def _jobs(state: Path) -> Path:
    return state / "jobs"


def _submit(state: Path, args: argparse.Namespace) -> int:
    if (state / "refuse-submissions").exists():
        print("sbatch: error: Batch job submission failed: queue closed", file=sys.stderr)
        return 1
    if not Path(args.input).is_file():
        print(f"sbatch: error: no input at {args.input}", file=sys.stderr)
        return 1
    jobs = _jobs(state)
    jobs.mkdir(parents=True, exist_ok=True)
    number = 1000
    while True:  # mkdir is atomic: two submissions never share a number
        try:
            (jobs / str(number)).mkdir()
            break
        except FileExistsError:
            number += 1
    job = jobs / str(number)
    (job / "job.json").write_text(
        json.dumps({"input": args.input, "output": args.output, "model": args.model})
    )
    (job / "state").write_text("PENDING\n")
    print(f"Submitted batch job {number}")
    return 0


def _status(state: Path, job_id: str) -> int:
    job = _jobs(state) / job_id
    if not (job / "state").is_file():
        print(f"slurm_load_jobs error: Invalid job id specified: {job_id}", file=sys.stderr)
        return 1
    with (job / "polls").open("a") as polls:
        polls.write(f"{time.time()}\n")
    print((job / "state").read_text().strip())
    return 0


def _cancel(state: Path, job_id: str) -> int:
    job = _jobs(state) / job_id
    if not (job / "state").is_file():
        return 1
    (job / "cancel-asked").write_text("yes\n")
    (job / "state").write_text("CANCELLED\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake_scheduler")
    parser.add_argument("--state", required=True, type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit")
    submit.add_argument("--input", required=True)
    submit.add_argument("--output", required=True)
    submit.add_argument("--model", required=True)
    for name in ("status", "cancel"):
        commands.add_parser(name).add_argument("job_id")
    args = parser.parse_args(argv)
    if args.command == "submit":
        return _submit(args.state, args)
    if args.command == "status":
        return _status(args.state, args.job_id)
    return _cancel(args.state, args.job_id)


class FakeScheduler:
    """The test's side of the fake scheduler: the commands to configure, and its jobs."""

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)

    def _command(self, *words: str) -> str:
        return shlex.join([sys.executable, str(SCRIPT), "--state", str(self.state), *words])

    def config(self, **extra: Any) -> dict[str, Any]:
        """A `CommandBatchEndpoint` config whose commands are this scheduler."""
        submit = self._command("submit", "--input", "{input}", "--output", "{output}")
        return {
            "submit_command": submit + " --model {model}",
            "status_command": self._command("status", "{job_id}"),
            "cancel_command": self._command("cancel", "{job_id}"),
            "command_timeout": 60,
            **extra,
        }

    def refuse_submissions(self) -> None:
        (self.state / "refuse-submissions").write_text("closed\n")

    def jobs(self) -> list[str]:
        folder = _jobs(self.state)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "state").is_file())

    def job(self, job_id: str) -> dict[str, Any]:
        job = _jobs(self.state) / job_id
        details: dict[str, Any] = json.loads((job / "job.json").read_text())
        details["state"] = (job / "state").read_text().strip()
        details["cancel_asked"] = (job / "cancel-asked").exists()
        return details

    def polls(self, job_id: str) -> int:
        path = _jobs(self.state) / job_id / "polls"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def set_state(self, job_id: str, line: str) -> None:
        path = _jobs(self.state) / job_id / "state"
        staged = path.with_suffix(".new")
        staged.write_text(line + "\n")
        os.replace(staged, path)  # a status read sees the old line or the new, never half

    def finish(self, job_id: str) -> list[dict[str, Any]]:
        """Run the job: one answer per input line in the output file, then COMPLETED."""
        job = self.job(job_id)
        answers = []
        for number, raw in enumerate(Path(job["input"]).read_text().splitlines()):
            item = json.loads(raw)
            text = item["body"]["messages"][0]["content"]
            answers.append(
                {
                    "id": f"vllm-{job_id}-{number}",
                    "custom_id": item["custom_id"],
                    "response": {
                        "status_code": 200,
                        "request_id": f"vllm-{job_id}-{number}",
                        "body": {
                            "object": "chat.completion",
                            "model": job["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": f"done: {text}"},
                                    "finish_reason": "stop",
                                }
                            ],
                        },
                    },
                    "error": None,
                }
            )
        Path(job["output"]).write_text("".join(json.dumps(a) + "\n" for a in answers))
        self.set_state(job_id, "COMPLETED")
        return answers

    def fail(self, job_id: str, reason: str) -> None:
        self.set_state(job_id, f"FAILED {reason}")


if __name__ == "__main__":
    sys.exit(main())
