"""Open WebUI, driven in a real headless browser, against a live vllm-mlx server.

Run by `make e2e-webui` with the Python of Open WebUI's own venv (.venv-webui, which
also holds playwright): it starts `vllm-mlx serve` (the embedded model) and
`open-webui serve` (no auth, OPENAI_API_BASE_URL at our server, every download and
update check off, its data under the output folder), both on free loopback ports,
then drives Debian's Chromium through playwright's Python API (no browser download;
the page may reach loopback only):

1. picks the embedded model in Open WebUI's model list;
2. sends a message and watches the answer stream into the page (its text must grow
   through several lengths and end non-empty);
3. sends a second turn and sees its answer (the chat now holds two answers);
4. starts a long answer and clicks Stop midway: the text must stop growing, our
   server must log the request's client as gone (499) and the engine abort it;
5. our server's log must show no 4xx/5xx and no failed request.

Open WebUI keeps its defaults, so it sends its built-in tools (~4,500 prompt tokens)
with every chat request, as it does for its users; --no-webui-tools turns that off.
A screenshot of the finished chat goes to OUT/chat.png, both servers' logs to
OUT/server.log and OUT/open-webui.log, the measurements to OUT/summary.json. Exits
non-zero on any failure; both servers are always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

LOOPBACK = "127.0.0.1"

FIRST_PROMPT = "Hello! In two or three sentences, what is the capital of France known for?"
SECOND_PROMPT = "Thank you. Now name three famous museums in that city."
LONG_PROMPTS = (  # the answer to stop midway; the next one if it ends too soon
    "Write a very long, detailed essay of at least 1500 words about the history of "
    "computing, from the abacus to modern computers, with many sections.",
    "Count from 1 to 500, one number per line, writing each number out in words.",
)

# Selectors of Open WebUI 0.12 (src/lib/components/chat/...): the model picker's
# trigger and options, the ProseMirror input, the send and stop buttons, and the
# messages (`chat-user` / `chat-assistant` wrap each message of that role).
MODEL_BUTTON = 'button[id^="model-selector-"][aria-haspopup="listbox"]'
CHAT_INPUT = "#chat-input"
SEND_BUTTON = "#send-message-button"
STOP_BUTTON = 'button[aria-label="Stop"]'
USER_MESSAGE = ".chat-user"
ASSISTANT_MESSAGE = ".chat-assistant"
ASSISTANT_TEXT = f"{ASSISTANT_MESSAGE} #response-content-container"


class E2EError(Exception):
    """A failed check; the message says what and where to look."""


def log(message: str) -> None:
    print(f"[e2e-webui {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this script dies without cleaning up (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Service:
    """A server subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        log(f"starting {name}: {' '.join(argv)} (log: {log_path})")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise E2EError(
                f"{self.name} exited with status {code}; "
                f"see {self.log_path}:\n{tail(self.log_path)}"
            )

    def wait_healthy(self, url: str, timeout: float, ok: Callable[[bytes], bool]) -> float:
        start = time.monotonic()
        while True:
            self.check_alive()
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=10) as response,
            ):
                if response.status == 200 and ok(response.read()):
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise E2EError(
                    f"{self.name} not healthy at {url} after {timeout:.0f}s; "
                    f"see {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(1.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            log(f"stopping {self.name}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for 30s: killing it")
        # Whatever is left of the group (workers, helpers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._log.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def webui_env(args: argparse.Namespace, api_base: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "WEBUI_SECRET_KEY": secrets.token_hex(32),
            # Single-user mode: no login page, the browser is the admin.
            "WEBUI_AUTH": "False",
            # Our server is its only connection.
            "ENABLE_OPENAI_API": "True",
            "OPENAI_API_BASE_URL": api_base,
            "OPENAI_API_KEY": "none",
            "ENABLE_OLLAMA_API": "False",
            "ENABLE_DIRECT_CONNECTIONS": "False",
            # Nothing leaves the machine: no update checks, no model downloads.
            "OFFLINE_MODE": "True",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ENABLE_VERSION_UPDATE_CHECK": "False",
            "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
            "RAG_RERANKING_MODEL_AUTO_UPDATE": "False",
            "WHISPER_MODEL_AUTO_UPDATE": "False",
            "ANONYMIZED_TELEMETRY": "False",
            "DO_NOT_TRACK": "True",
            "SCARF_NO_ANALYTICS": "True",
            "ENABLE_COMMUNITY_SHARING": "False",
            # Its RAG embeddings come from our /v1/embeddings rather than a local
            # sentence-transformers model (which it would load, or try to download).
            "RAG_EMBEDDING_ENGINE": "openai",
            "RAG_OPENAI_API_BASE_URL": api_base,
            "RAG_OPENAI_API_KEY": "none",
            "RAG_EMBEDDING_MODEL": "all-MiniLM-L6-v2",
            # Background tasks that would send the model extra requests after each
            # answer (titles, tags, follow-ups): off, so the chat is all it serves on
            # a small CPU.
            "ENABLE_TITLE_GENERATION": "False",
            "ENABLE_TAGS_GENERATION": "False",
            "ENABLE_FOLLOW_UP_GENERATION": "False",
            "ENABLE_AUTOCOMPLETE_GENERATION": "False",
            "ENABLE_RETRIEVAL_QUERY_GENERATION": "False",
            "ENABLE_SEARCH_QUERY_GENERATION": "False",
            "ENABLE_CODE_INTERPRETER": "False",
            "ENABLE_EVALUATION_ARENA_MODELS": "False",
            "GLOBAL_LOG_LEVEL": "INFO",
        }
    )
    if not args.webui_tools:
        # Open WebUI's native function calling sends its built-in tools (time, memory,
        # notes, chat search...: ~4,500 prompt tokens) with every chat request; this
        # turns that off for every model.
        env["DEFAULT_MODEL_METADATA"] = json.dumps({"capabilities": {"builtin_tools": False}})
    return env


# --- the browser part -------------------------------------------------------------


def sample_answer(
    page: Any, index: int, timeout: float, until_done: bool = True
) -> Iterator[tuple[float, str, bool]]:
    """Yield (seconds, text, generating) for the index-th answer every 0.25 s."""
    start = time.monotonic()
    answers = page.locator(ASSISTANT_MESSAGE)
    while True:
        elapsed = time.monotonic() - start
        text = ""
        if answers.count() > index:
            text = answers.nth(index).inner_text(timeout=5_000).strip()
        generating = page.locator(STOP_BUTTON).count() > 0
        yield elapsed, text, generating
        if elapsed > timeout:
            raise E2EError(
                f"answer {index + 1} not finished after {timeout:.0f}s (last text: {text[:200]!r})"
            )
        page.wait_for_timeout(250)


WATCH_LENGTHS_JS = """([selector, index]) => {
    if (window.__e2eObserver) window.__e2eObserver.disconnect();
    const lengths = (window.__e2eLengths = []);
    const record = () => {
        const answer = document.querySelectorAll(selector)[index];
        const length = answer ? answer.innerText.trim().length : 0;
        if (length && length !== lengths[lengths.length - 1]) lengths.push(length);
    };
    window.__e2eObserver = new MutationObserver(record);
    window.__e2eObserver.observe(document.body, {
        subtree: true, childList: true, characterData: true,
    });
}"""


def watch_lengths(page: Any, index: int) -> None:
    """Record, in the page, each new text length the index-th answer renders with."""
    page.evaluate(WATCH_LENGTHS_JS, [ASSISTANT_MESSAGE, index])


def send(page: Any, prompt: str) -> None:
    box = page.locator(CHAT_INPUT)
    box.click()
    page.keyboard.type(prompt)
    page.locator(SEND_BUTTON).click()


def run_turn(
    page: Any, prompt: str, index: int, timeout: float, server_log: Path
) -> dict[str, Any]:
    """Send a prompt and watch answer index stream in until the UI says done."""
    users_before = page.locator(USER_MESSAGE).count()
    watch_lengths(page, index)
    sent = time.monotonic()
    send(page, prompt)
    page.locator(USER_MESSAGE).nth(users_before).wait_for(timeout=60_000)
    lengths: list[int] = []
    first_text_s = None
    saw_generating = False
    text = ""
    quiet_since = None
    for elapsed, text, generating in sample_answer(page, index, timeout):
        saw_generating |= generating
        if text and first_text_s is None:
            first_text_s = elapsed
        if text and (not lengths or len(text) != lengths[-1]):
            lengths.append(len(text))
        # Done: the stop button is gone and the text has held still for a second.
        if text and not generating:
            quiet_since = quiet_since or elapsed
            if elapsed - quiet_since >= 1.0:
                break
        else:
            quiet_since = None
    # Every length the page rendered (seen by a MutationObserver: a fast machine can
    # stream a short answer between two of the samples above).
    rendered = page.evaluate("window.__e2eLengths") or []
    if len(rendered) > len(lengths):
        lengths = rendered
    growth = [b for a, b in itertools.pairwise(lengths) if b > a]
    if not text:
        raise E2EError(with_server_errors(f"answer {index + 1} is empty", server_log))
    if len(growth) < 2:
        raise E2EError(
            with_server_errors(
                f"answer {index + 1} did not stream: its text took only the lengths {lengths} "
                f"(expected it to grow over several samples); it reads {text[:200]!r}",
                server_log,
            )
        )
    return {
        "prompt": prompt,
        "text": text,
        "chars": len(text),
        "samples_growing": len(growth) + 1,
        "lengths": lengths,
        "first_text_s": round(first_text_s or 0.0, 1),
        "total_s": round(time.monotonic() - sent, 1),
        "saw_stop_button": saw_generating,
    }


def disconnected_ids(server_log: Path) -> list[str]:
    text = server_log.read_text(errors="replace")
    return re.findall(r"client disconnected \(499\): request (\S+)", text)


def server_errors(server_log: Path) -> list[str]:
    """Our server's access-log 4xx/5xx and requests the engine failed."""
    pattern = re.compile(r'" [45]\d\d |-> [45]\d\d |engine\.core: request \S+ failed:')
    lines = server_log.read_text(errors="replace").splitlines()
    return [line.strip() for line in lines if pattern.search(line)]


def with_server_errors(message: str, server_log: Path) -> str:
    errors = server_errors(server_log)
    if errors:
        message += "\nour server logged these errors:\n" + "\n".join(
            "    " + line[:300] for line in errors[-8:]
        )
    return message + f"\n(see {server_log})"


class FinishedTooSoon(E2EError):
    """The answer to be stopped ended on its own first."""


def stop_midway(
    page: Any, prompt: str, index: int, server_log: Path, timeout: float
) -> dict[str, Any]:
    """Start a long answer, click Stop once it has streamed a little, check it stops."""
    before = len(disconnected_ids(server_log))
    users_before = page.locator(USER_MESSAGE).count()
    send(page, prompt)
    page.locator(USER_MESSAGE).nth(users_before).wait_for(timeout=60_000)
    at_click = ""
    for _elapsed, text, generating in sample_answer(page, index, timeout):
        if text and not generating:
            raise FinishedTooSoon(
                with_server_errors(
                    f"the long answer ended ({len(text)} chars: {text[:120]!r}) before "
                    "Stop could be clicked",
                    server_log,
                )
            )
        if generating and len(text) >= 60:
            at_click = text
            page.locator(STOP_BUTTON).first.click()
            break
    clicked = time.monotonic()
    # The UI marks the message done: the stop button goes away.
    page.locator(STOP_BUTTON).wait_for(state="detached", timeout=60_000)
    # The server sees the client go (Open WebUI cancels its upstream request).
    while len(disconnected_ids(server_log)) <= before:
        if time.monotonic() - clicked > 60:
            raise E2EError(
                "Stop was clicked but the server never logged the request's client as "
                f"disconnected (499); see {server_log}:\n{tail(server_log)}"
            )
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)
    settled = page.locator(ASSISTANT_MESSAGE).nth(index).inner_text().strip()
    # ... and the text no longer grows: watch it for a few seconds.
    page.wait_for_timeout(5000)
    final = page.locator(ASSISTANT_MESSAGE).nth(index).inner_text().strip()
    if final != settled:
        raise E2EError(
            f"the stopped answer kept growing: {len(settled)} -> {len(final)} chars "
            "in the 5 s after Stop"
        )
    if not final:
        raise E2EError("the stopped answer is empty")
    # The engine aborted that request (rather than finishing it unseen).
    request_id = disconnected_ids(server_log)[before]
    abort = None
    while abort is None:
        found = re.search(
            rf"request {re.escape(request_id)}\S* (\w+): .*?\+ (\d+) completion tokens",
            server_log.read_text(errors="replace"),
        )
        if found:
            abort = found
        elif time.monotonic() - clicked > 90:
            raise E2EError(f"the engine never logged the end of request {request_id}")
        else:
            page.wait_for_timeout(250)
    if abort.group(1) != "abort":
        raise E2EError(
            f"request {request_id} ended as {abort.group(1)!r} after Stop, not as an abort"
        )
    return {
        "chars_at_click": len(at_click),
        "chars_final": len(final),
        "request_id": request_id,
        "aborted_after_tokens": int(abort.group(2)),
    }


def pick_model(page: Any, model: str) -> int:
    trigger = page.locator(MODEL_BUTTON).first
    trigger.wait_for(timeout=120_000)
    trigger.click()
    option = page.get_by_role("option", name=f"Select {model} model")
    if option.count() == 0:
        option = page.locator(f'[aria-label="Select {model} model"]')
    option.first.wait_for(timeout=60_000)
    listed = page.get_by_role("option").count()
    option.first.click()
    label = trigger.get_attribute("aria-label") or ""
    deadline = time.monotonic() + 30
    while model not in label:
        if time.monotonic() > deadline:
            raise E2EError(f"picking {model} left the model selector at {label!r}")
        page.wait_for_timeout(250)
        label = trigger.get_attribute("aria-label") or ""
    return listed


def dismiss_overlays(page: Any) -> None:
    """First visits may open a changelog / welcome dialog over the chat."""
    for name in ("Okay, Let's Go!", "Okay, Let's Go", "Close", "Dismiss"):
        button = page.get_by_role("button", name=name, exact=True)
        with contextlib.suppress(Exception):
            if button.count() and button.first.is_visible():
                button.first.click(timeout=5_000)
                page.wait_for_timeout(500)
    page.keyboard.press("Escape")


def drive_browser(args: argparse.Namespace, ui_url: str, model: str, server_log: Path) -> dict:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    results: dict[str, Any] = {"blocked_requests": blocked}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            args=["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(60_000)

            def loopback_only(route: Any) -> None:
                host = urlparse(route.request.url).hostname or ""
                if route.request.url.startswith(("data:", "blob:")) or host in (
                    LOOPBACK,
                    "localhost",
                ):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", loopback_only)
            page = context.new_page()
            console_errors: list[str] = []
            page.on(
                "console",
                lambda msg: console_errors.append(msg.text) if msg.type == "error" else None,
            )
            try:
                page.goto(ui_url, wait_until="domcontentloaded", timeout=180_000)
                page.locator(CHAT_INPUT).wait_for(timeout=180_000)
                dismiss_overlays(page)
                results["models_listed"] = pick_model(page, model)
                log(f"picked model {model} of {results['models_listed']} listed")
                results["turn1"] = run_turn(page, FIRST_PROMPT, 0, args.answer_timeout, server_log)
                log(f"turn 1 answered: {results['turn1']['chars']} chars")
                results["turn2"] = run_turn(page, SECOND_PROMPT, 1, args.answer_timeout, server_log)
                log(f"turn 2 answered: {results['turn2']['chars']} chars")
                if page.locator(ASSISTANT_MESSAGE).count() != 2:
                    raise E2EError(
                        f"expected 2 answers in the chat, found "
                        f"{page.locator(ASSISTANT_MESSAGE).count()}"
                    )
                for attempt, prompt in enumerate(LONG_PROMPTS):
                    try:
                        results["stop"] = stop_midway(
                            page, prompt, 2 + attempt, server_log, args.answer_timeout
                        )
                        break
                    except FinishedTooSoon as exc:
                        if attempt + 1 == len(LONG_PROMPTS):
                            raise
                        log(f"{exc}; trying a longer prompt")
                log(f"turn 3 stopped at {results['stop']['chars_final']} chars")
                errors = server_errors(server_log)
                if errors:
                    raise E2EError(
                        with_server_errors("our server answered with errors", server_log)
                    )
                # No tooltip over the screenshot (the mouse rests where Stop was).
                page.mouse.move(640, 120)
                page.evaluate("document.activeElement && document.activeElement.blur()")
                page.wait_for_timeout(1000)
                results["chat_url"] = page.url
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(args.out / "chat.png"), full_page=True)
                    results["screenshot"] = str(args.out / "chat.png")
                results["console_errors"] = console_errors
        finally:
            browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=".venv/bin/vllm-mlx", help="vllm-mlx executable")
    parser.add_argument("--open-webui", default=".venv-webui/bin/open-webui")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", type=Path, default=Path("build/e2e-webui"))
    parser.add_argument("--model", default=None, help="model spec for vllm-mlx (default: embedded)")
    parser.add_argument("--server-timeout", type=float, default=600.0)
    parser.add_argument("--webui-timeout", type=float, default=900.0)
    parser.add_argument("--answer-timeout", type=float, default=600.0)
    parser.add_argument(
        "--webui-tools",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep Open WebUI's default of sending its built-in tools with every request",
    )
    args = parser.parse_args()

    args.out = args.out.resolve()
    args.server = str(Path(args.server).resolve())
    args.open_webui = str(Path(args.open_webui).resolve())
    if not (os.path.isfile(args.chromium) and os.access(args.chromium, os.X_OK)):
        print(
            f"e2e-webui: no Chromium at {args.chromium!r} (apt-get install chromium)",
            file=sys.stderr,
        )
        return 2
    data_dir = args.out / "webui-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir()
    for stale in ("chat.png", "summary.json"):
        (args.out / stale).unlink(missing_ok=True)
    server_log = args.out / "server.log"
    webui_log = args.out / "open-webui.log"

    # SIGTERM (make interrupted, CI timeout) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    services: list[Service] = []
    summary: dict[str, Any] = {}
    try:
        api_port, ui_port = free_port(), free_port()
        server_argv = [args.server, "serve"] + ([args.model] if args.model else [])
        server_argv += ["--localhost", "--port", str(api_port), "--log-level", "info"]
        server = Service("vllm-mlx", server_argv, server_log, dict(os.environ), Path.cwd())
        services.append(server)
        took = server.wait_healthy(
            f"http://{LOOPBACK}:{api_port}/health", args.server_timeout, lambda _b: True
        )
        models = [m["id"] for m in get_json(f"http://{LOOPBACK}:{api_port}/v1/models")["data"]]
        model = models[0]
        log(f"vllm-mlx healthy in {took:.0f}s on port {api_port}, serving {models}")
        summary["server_start_s"] = round(took, 1)

        api_base = f"http://{LOOPBACK}:{api_port}/v1"
        ui = Service(
            "open-webui",
            [args.open_webui, "serve", "--host", LOOPBACK, "--port", str(ui_port)],
            webui_log,
            webui_env(args, api_base, data_dir),
            args.out,
        )
        services.append(ui)
        took = ui.wait_healthy(
            f"http://{LOOPBACK}:{ui_port}/health",
            args.webui_timeout,
            lambda body: b"true" in body,
        )
        log(f"open-webui healthy in {took:.0f}s on port {ui_port}")
        summary["webui_start_s"] = round(took, 1)

        browser_started = time.monotonic()
        summary.update(drive_browser(args, f"http://{LOOPBACK}:{ui_port}/", model, server_log))
        summary["browser_s"] = round(time.monotonic() - browser_started, 1)
        server.check_alive()
        ui.check_alive()
        ok = True
    except E2EError as exc:
        print(f"\ne2e-webui FAILED: {exc}", file=sys.stderr)
        print(f"logs: {server_log}, {webui_log}", file=sys.stderr)
        ok = False
    except Exception as exc:  # playwright timeouts and the like
        print(f"\ne2e-webui FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"logs: {server_log}, {webui_log}", file=sys.stderr)
        ok = False
    finally:
        for service in reversed(services):
            service.stop()
    summary["total_s"] = round(time.monotonic() - started, 1)
    summary["ok"] = ok
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if (args.out / "chat.png").exists():
        log(f"screenshot: {args.out / 'chat.png'}")
    if not ok:
        return 1

    t1, t2, stop = summary["turn1"], summary["turn2"], summary["stop"]
    print("\ne2e-webui passed: Open WebUI in headless Chromium against vllm-mlx")
    print(f"  model picked in the UI:  {model}")
    print(
        f"  turn 1 streamed:  {t1['chars']} chars, rendered at "
        f"{t1['samples_growing']} growing lengths, first text after "
        f"{t1['first_text_s']}s, done in {t1['total_s']}s"
    )
    print(f"    {t1['text'][:160]!r}")
    print(
        f"  turn 2 streamed:  {t2['chars']} chars, rendered at "
        f"{t2['samples_growing']} growing lengths, done in {t2['total_s']}s"
    )
    print(f"    {t2['text'][:160]!r}")
    print(
        f"  turn 3 stopped:   clicked Stop at {stop['chars_at_click']} chars, ended at "
        f"{stop['chars_final']} and held still; the server logged the client gone (499) "
        f"and aborted request {stop['request_id']} after "
        f"{stop['aborted_after_tokens']} tokens"
    )
    print("  our server's log: no 4xx/5xx, no failed requests")
    print(f"  requests outside loopback blocked in the browser: {len(summary['blocked_requests'])}")
    print(
        f"  timings: server up {summary['server_start_s']}s, Open WebUI up "
        f"{summary['webui_start_s']}s, browser {summary['browser_s']}s, total {summary['total_s']}s"
    )
    print(f"  screenshot: {summary['screenshot']}")
    print(f"  logs: {server_log}, {webui_log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
