"""What the video says: a title and the lines the voice speaks, from a ScriptWriter.

Two writers: `ChatCompletionsWriter` asks an OpenAI-compatible chat-completions API
(production: SCRIPT_API_URL, SCRIPT_API_KEY, SCRIPT_MODEL) and `OfflineWriter` writes
from templates about the topic's own words (the default: no network, no key). Both
take a seed (the job id), so the same topic asked twice gives another take. A script
the user wrote (`script` on the API) is narrated as written, split into sentences.

A writer that refuses the topic raises ScriptRefused: the job fails at once and its
credit is refunded. A writer that cannot be reached raises ScriptUnavailable: the job
is retried later, like any other failed render attempt.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from . import language as languages
from .voices import WORDS_PER_SECOND

log = logging.getLogger(__name__)

# the longest script a user may send (the API says so too)
MAX_USER_SCRIPT = 2000
# words a line of the API writer's script may have (longer ones read as a wall of text)
MAX_LINE_CHARACTERS = 300


class ScriptRefused(Exception):
    """The writer will not write about this topic: fail the job now (refund), no retry."""

    permanent = True


class ScriptUnavailable(Exception):
    """The writer could not be reached or answered nonsense: retry the job later."""


@dataclass(frozen=True)
class ScriptRequest:
    topic: str
    duration: int  # seconds of video asked for
    language: str  # BCP 47 primary tag (worker/language.py)
    seed: int
    speech_seconds: float  # how long the lines should take to say

    @property
    def words(self) -> int:
        return max(8, round(self.speech_seconds * WORDS_PER_SECOND))


@dataclass(frozen=True)
class Script:
    title: str
    lines: tuple[str, ...]
    source: str  # offline | api | user


class ScriptWriter(Protocol):
    """Writes the script of one video."""

    def write(self, request: ScriptRequest) -> Script: ...


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")


def split_sentences(text: str) -> list[str]:
    """A user's script as sentences (., !, ? and their CJK forms, and line breaks)."""
    return [s for s in (" ".join(part.split()) for part in _SENTENCE_END.split(text)) if s]


def user_script(topic: str, text: str) -> Script:
    """The user's own words, narrated as written."""
    lines = split_sentences(text[:MAX_USER_SCRIPT])
    if not lines:
        raise ScriptRefused("The script is empty.")
    return Script(title=_title_case(topic), lines=tuple(lines), source="user")


# ---------------------------------------------------------------------------------
# The offline writer

STOPWORDS = set("""
a an the of in on at to for from by with about into over under after before between through during
and or but nor so yet if then than that this these those it its is are was were be been being
how why what when where who whom which whose do does did done can could should would will shall may might
must i you he she we they me him her us them my your his our their mine yours ours theirs
very really just also too more most much many some any all every each no not only own same such
secret secrets truth story stories history fact facts thing things everything explained guide
""".split())
FRAMES = ("history", "story", "science", "secret", "secrets", "truth", "rise", "fall", "future", "origin",
          "origins", "psychology", "economics", "art", "power", "life", "world")


@dataclass(frozen=True)
class _Topic:
    text: str  # as the user wrote it, tidied
    subject: str  # the thing it is about ("coffee" in "the history of coffee")
    frame: str | None  # the angle ("history"), if the topic names one
    keywords: tuple[str, ...]  # its content words, most telling first


def parse_topic(topic: str) -> _Topic:
    text = " ".join(topic.split()).strip(" .!?")
    words = re.findall(r"[\w'’-]+", text)
    lowered = [w.lower() for w in words]
    frame = next((w for w in lowered if w in FRAMES), None)
    # "the X of Y": Y is the subject; otherwise the topic without its leading small words
    match = re.search(r"\b(?:of|about|behind|in|on)\s+(?:the\s+|a\s+|an\s+)?(.+)$", text, re.IGNORECASE)
    if frame and match:
        subject = match.group(1)
    elif lowered and lowered[0] in ("why", "how", "what", "when", "who", "where", "do", "does", "is", "are"):
        # a question ("why cats purr"): its first content word is what it is about
        subject = next((w for w, low in zip(words[1:], lowered[1:]) if low not in STOPWORDS), text)
    else:
        subject = re.sub(r"^(?:(?:the|a|an)\s+)+", "", text, flags=re.IGNORECASE) or text
    keywords = [w for w, low in zip(words, lowered) if low not in STOPWORDS and len(w) > 2]
    keywords.sort(key=lambda w: (w.lower() not in subject.lower(), -len(w)))
    return _Topic(text, subject, frame, tuple(dict.fromkeys(keywords)) or (subject,))


TITLES = ["{Topic}", "{Topic} in {duration} seconds", "The short story of {subject}", "{Subject}, explained",
          "What you never noticed about {subject}", "{Topic}: the quick version"]
HOOKS = [
    "Here is {topic}, in {duration} seconds.",
    "You have heard of {subject} a thousand times. Let's actually look at it.",
    "What do you really know about {subject}?",
    "Give me {duration} seconds, and {subject} will never look the same.",
    "Everyone has an opinion about {subject}. Few know how it got here.",
]
OPENERS = [
    "Every story about {subject} starts with someone who needed it.",
    "{Subject} did not appear out of nowhere; somebody noticed it first.",
    "Before {subject} was ordinary, it was somebody's new idea.",
    "To understand {subject}, start with the people around it.",
]
KEYWORD_LINES = [
    "Take the word {kw} for a second: it carries more than it seems.",
    "Ask who first cared about {kw}, and why it mattered to them.",
    "The details of {kw} are where it gets interesting.",
    "Look closely at {kw}, and the whole picture changes.",
    "{Kw} is the part most people skip, and the part that explains the rest.",
    "Once you notice {kw}, you start seeing it everywhere.",
]
PAIR_LINES = [
    "{Kw} and {kw2} are more connected than they look.",
    "Put {kw} next to {kw2}, and a pattern appears.",
]
FRAME_LINES = {
    "history": ["Its history is a chain of small decisions, each one made by real people.",
                "Go back far enough, and {subject} looked nothing like it does today."],
    "science": ["The science is simpler than it sounds: cause, effect, and a lot of patience.",
                "Measure {subject} carefully, and the surprises start to show."],
    "future": ["Where {subject} goes next depends on choices being made right now."],
}
MIDDLES = [
    "Small choices about {subject} added up over time.",
    "Some ideas about {subject} stuck, and some quietly disappeared.",
    "Then {subject} spread, one person and one place at a time.",
    "People still argue about parts of it, and that is a good sign.",
    "The simple version leaves out the best part: the people.",
    "Much of {subject} is hidden in plain sight.",
    "Today, {subject} shapes more of daily life than you would guess.",
]
PAYOFFS = [
    "So the next time {subject} comes up, you will see the whole story.",
    "That is {subject}: ordinary on the surface, remarkable underneath.",
    "Remember that the next time someone mentions {subject}.",
]
CALLS = ["Follow for more short stories like this.", "Which topic should come next? Tell me in the comments.",
         "Save this for later, and share it with a curious friend."]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _title_case(topic: str) -> str:
    text = " ".join(topic.split())
    return _capital(text)


class OfflineWriter:
    """Templates filled with the topic's own words: a hook, an opener, lines about each of
    its keywords, middle lines, a payoff and a call to follow, as many as the duration
    holds. Deterministic for a (topic, seed) pair; another seed gives another take."""

    name = "offline"

    def write(self, request: ScriptRequest) -> Script:
        if request.language != "en":
            # no templates in other languages: the topic itself is the caption (the job's
            # note says so, and that a `script` in the language is narrated as written)
            return Script(title=request.topic, lines=(request.topic,), source="offline")
        rng = random.Random(request.seed)
        topic = parse_topic(request.topic)
        keywords = [k for k in topic.keywords if k.lower() != topic.subject.lower()] or list(topic.keywords)
        fill = {"topic": topic.text[:1].lower() + topic.text[1:] if topic.text[:1].isupper()
                and not topic.text[1:2].isupper() else topic.text,
                "subject": topic.subject, "duration": request.duration}
        fill.update(Topic=_capital(topic.text), Subject=_capital(topic.subject))

        body: list[str] = []
        body.append(rng.choice(OPENERS))
        if topic.frame in FRAME_LINES:
            body.append(rng.choice(FRAME_LINES[topic.frame]))
        for kw in rng.sample(keywords, len(keywords))[:3]:
            body.append(rng.choice(KEYWORD_LINES).replace("{kw}", kw).replace("{Kw}", _capital(kw)))
        if len(keywords) >= 2:
            a, b = rng.sample(keywords, 2)
            body.append(rng.choice(PAIR_LINES).replace("{kw2}", b).replace("{kw}", a).replace("{Kw}", _capital(a)))
        middles = rng.sample(MIDDLES, len(MIDDLES))
        hook, payoff, call = rng.choice(HOOKS), rng.choice(PAYOFFS), rng.choice(CALLS)

        def words(lines: list[str]) -> int:
            return sum(len(line.split()) for line in lines)

        budget = request.words
        lines = [hook]
        fixed = words([hook.format(**fill), payoff.format(**fill), call])
        unused_keyword_lines = rng.sample(KEYWORD_LINES, len(KEYWORD_LINES))
        pool = body + middles
        while pool and words([line.format(**fill) for line in lines[1:]]) + fixed + 6 <= budget:
            lines.append(pool.pop(0))
            if not pool and unused_keyword_lines and keywords:
                kw = rng.choice(keywords)
                pool.append(unused_keyword_lines.pop().replace("{kw}", kw).replace("{Kw}", _capital(kw)))
        # a short video keeps the hook and the payoff; the call to follow only if it fits
        lines.append(payoff)
        if words([line.format(**fill) for line in lines]) + len(call.split()) <= budget * 1.1:
            lines.append(call)
        rendered = tuple(_capital(line.format(**fill)) for line in lines)
        return Script(title=rng.choice(TITLES).format(**fill), lines=rendered, source="offline")


# ---------------------------------------------------------------------------------
# The chat-completions writer

SYSTEM_PROMPT = (
    "You write the narration of short vertical videos (YouTube Shorts, TikTok, Reels). "
    "Reply with one JSON object and nothing else: {\"title\": string, \"lines\": [string, ...]}. "
    "Each line is one spoken sentence of at most 20 words. Plain spoken words only: no emoji, hashtags, "
    "stage directions, or speaker names. Open with a hook, end with a payoff. Be accurate; if unsure of a "
    "fact, say less rather than invent. If you will not write about the topic, reply "
    "{\"refusal\": \"<why>\"} instead."
)


@dataclass
class ChatCompletionsWriter:
    """An OpenAI-compatible `POST {url}/chat/completions` client (OpenAI, Azure-style
    proxies, vLLM, llama.cpp's server, Ollama's /v1 ...). Retries timeouts, connection
    errors, 408/409/429 and 5xx with backoff; other 4xx answers and refusals are final."""

    url: str
    api_key: str | None
    model: str
    timeout: float = 30.0
    attempts: int = 3
    backoff: float = 1.0
    name: str = "api"

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read(1 << 20))

    def write(self, request: ScriptRequest) -> Script:
        language = languages.NAMES.get(request.language, request.language)
        prompt = (f"Topic: {request.topic}\nLanguage: write every line in {language}.\n"
                  f"Length: about {request.words} words in total, for a {request.duration}-second video. "
                  f"The title must suit a {request.duration}-second video.")
        body = {"model": self.model, "temperature": 0.9, "seed": request.seed % (2 ** 31),
                "response_format": {"type": "json_object"},
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}
        problem = "no answer"
        for attempt in range(1, self.attempts + 1):
            try:
                answer = self._post(body)
                return self._script(answer, request)
            except urllib.error.HTTPError as error:
                if error.code not in (408, 409, 429) and error.code < 500:
                    detail = error.read(2000).decode(errors="replace")
                    raise ScriptRefused(f"The script service refused the request ({error.code}): "
                                        f"{_short(detail)}") from None
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
                problem = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except (ValueError, KeyError, TypeError, IndexError) as error:
                problem = f"unusable answer ({error})"
            log.warning("script service attempt %d/%d failed: %s", attempt, self.attempts, problem)
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise ScriptUnavailable(f"The script service did not answer usefully after {self.attempts} tries: {problem}")

    def _script(self, answer: dict, request: ScriptRequest) -> Script:
        choice = answer["choices"][0]
        message = choice["message"]
        if message.get("refusal"):
            raise ScriptRefused(f"The script writer declined this topic: {_short(message['refusal'])}")
        if choice.get("finish_reason") == "content_filter":
            raise ScriptRefused("The script writer declined this topic (content filter).")
        content = (message.get("content") or "").strip()
        content = re.sub(r"^```(?:json)?\s*|\s*```$", "", content)
        data = json.loads(content)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("refusal"):
            raise ScriptRefused(f"The script writer declined this topic: {_short(str(data['refusal']))}")
        lines = data["lines"]
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise ValueError("lines is not a list of strings")
        lines = [" ".join(line.split())[:MAX_LINE_CHARACTERS] for line in lines if line.strip()]
        if len(lines) < 2:
            raise ValueError("fewer than two lines")
        title = data.get("title")
        title = " ".join(title.split())[:120] if isinstance(title, str) and title.strip() else request.topic
        return Script(title=title, lines=tuple(lines[:40]), source="api")


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


def writer_from_env(environ=None) -> ScriptWriter:
    """The API writer when SCRIPT_API_URL is set, else the offline one."""
    env = os.environ if environ is None else environ
    url = env.get("SCRIPT_API_URL")
    if not url:
        return OfflineWriter()
    return ChatCompletionsWriter(url=url, api_key=env.get("SCRIPT_API_KEY") or None,
                                 model=env.get("SCRIPT_MODEL") or "gpt-4o-mini",
                                 timeout=float(env.get("SCRIPT_TIMEOUT_SECONDS") or 30))
