"""Live GPT-4o classification through the ``openai`` package (ALGORITHM.md §2.4, issue #6 item 4).

* One user message per image: the prompt (with the category list interpolated as in §2.4) and the
  image as a base64 data URL with its real MIME type. ``temperature`` 0 and ``gpt-4o`` by default.
* Retries on 429/5xx/timeouts are the openai client's own (``max_retries``, exponential backoff with
  jitter, ``timeout`` per request); nothing here loops again on top of that.
* A 401/403 stops at once with a message saying to set ``OPENAI_API_KEY``.
* The key is read from ``OPENAI_API_KEY`` only, handed to the client and never logged, written or
  put in a message. ``OPENAI_BASE_URL`` is honoured by the client, so any compatible server works.
* Every answer is written to the answer cache (one JSON file per question: model, temperature, prompt,
  format and the image's bytes; atomically) before the next request, so a crash, a rerun, another limit,
  shard layout or sweep never asks the same question twice; a fully cached shard needs neither a key nor
  a network.
* Tokens and the estimated cost are logged per shard.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..descriptors import DESCRIPTORS
from ..errors import LabelError
from ..identity import sha256_of_file, short_hash
from ..io import atomic_write_json
from ..vocab import Vocabulary

LOG = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
CATEGORIES_PLACEHOLDER = "{categories}"

#: The authors' prompt (gpt_rewrite_label.py, lines 257-258), typos fixed, same instructions and format.
DEFAULT_PROMPT = (
    "Help me find, as exhaustively and accurately as possible, the categories that appear in the image "
    "among the available categories {categories}. Double check whether anything is missing. You may output "
    "categories you are unsure of and give them a lower probability, but output at most 25 categories. "
    "Output strictly in the format [id1: classname1, id2: classname2, ...], [probability of class1 in "
    "percentage, probability of class2 in percentage, ...] without other words. You have to output at "
    "least one category."
)

#: The same request when the answer is constrained by a JSON schema (``labels.json_schema: true``).
DEFAULT_JSON_PROMPT = (
    "Help me find, as exhaustively and accurately as possible, the categories that appear in the image "
    "among the available categories {categories}. Double check whether anything is missing. You may output "
    "categories you are unsure of and give them a lower probability, but output at most 25 categories. "
    "For each category give its id, its name and the probability in percent that it appears in the image. "
    "You have to output at least one category."
)

RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "classes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "probability": {"type": "integer"},
                },
                "required": ["id", "name", "probability"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["classes"],
    "additionalProperties": False,
}

#: USD per million tokens (input, output), for the cost estimate in the log only.
PRICES_PER_MILLION_TOKENS = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

# --- the prompt ----------------------------------------------------------------------------------


def ade20k_prompt_names() -> dict[int, str]:
    """The ';'-joined ADE20K synonym lists the authors' query listed (data/prompts/ade20k_gpt4o_names.txt)."""
    ref = resources.files("pnp_ovss") / "data" / "prompts" / "ade20k_gpt4o_names.txt"
    names = {}
    for line in ref.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, name = line.split("\t", 1)
            names[int(key)] = name.strip()
    return names


def categories_text(dataset: str, vocab: Vocabulary) -> str:
    """The category list as interpolated in the prompt (§2.4): a Python repr like the authors'.

    VOC/PSC/folder: ``{1: 'aeroplane', ...}``; ADE20K: the same with the full synonym lists;
    COCO: ``[[1, 'person'], [2, 'bicycle'], ...]`` (COCO-Stuff without 183 'other').
    """
    style = DESCRIPTORS[dataset].prompt_categories if dataset in DESCRIPTORS else "dict"
    if style == "coco_pairs":
        skip = DESCRIPTORS[dataset].prompt_excluded_ids
        return repr([[i, n] for i, n in zip(vocab.ids, vocab.names) if i not in skip])
    if style == "ade20k_synonyms":
        synonyms = ade20k_prompt_names()
        return repr({i: synonyms.get(i, n) for i, n in zip(vocab.ids, vocab.names)})
    return repr(dict(zip(vocab.ids, vocab.names)))


def prompt_template(prompt: str | None, json_schema: bool) -> str:
    """The configured template, or the default one for the answer format."""
    if prompt is None:
        return DEFAULT_JSON_PROMPT if json_schema else DEFAULT_PROMPT
    if CATEGORIES_PLACEHOLDER not in prompt:
        raise LabelError(f"labels.prompt must contain {CATEGORIES_PLACEHOLDER} where the category list goes")
    return prompt


def build_prompt(template: str, categories: str) -> str:
    """Insert the categories (plain replacement: other braces in the template stay as they are)."""
    return template.replace(CATEGORIES_PLACEHOLDER, categories)


# --- the image -----------------------------------------------------------------------------------


def image_mime_type(path: str | os.PathLike) -> str:
    """The MIME type of an image file from its content (not its name)."""
    try:
        with Image.open(path) as im:
            fmt = im.format
    except FileNotFoundError:
        raise LabelError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise LabelError(f"{path}: unreadable image ({exc})") from None
    mime = Image.MIME.get(fmt or "")
    if not mime:
        raise LabelError(f"{path}: image format {fmt} has no known MIME type")
    return mime


def image_data_url(path: str | os.PathLike) -> str:
    mime = image_mime_type(path)
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:{mime};base64,{data}"


def build_messages(prompt: str, data_url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": data_url}},
            ],
        }
    ]


def response_format(json_schema: bool) -> dict | None:
    if not json_schema:
        return None
    return {"type": "json_schema", "json_schema": {"name": "image_classes", "strict": True, "schema": RESPONSE_SCHEMA}}


def structured_to_text(raw: str) -> str:
    """A JSON-schema answer rewritten in the bracket format of §2.2, for the same parser."""
    try:
        data = json.loads(raw)
        classes = data["classes"]
        ids = [int(c["id"]) for c in classes]
        names = [re.sub(r"[,:\[\]]", " ", str(c["name"])).strip() for c in classes]
        probs = [c["probability"] for c in classes]
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in probs):
            raise ValueError("probability is not a number")
    except (ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"structured answer is not of the requested JSON schema ({exc}): {raw[:160]!r}") from None
    entries = ", ".join(f"{i}: {n}" for i, n in zip(ids, names))
    return f"[{entries}], [{', '.join(f'{p}%' for p in probs)}]"


# --- the client ----------------------------------------------------------------------------------


def api_key_from_env() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise LabelError(
            f"labels.source=gpt4o needs an OpenAI API key: set the environment variable {API_KEY_ENV} "
            f"(and {BASE_URL_ENV} for another compatible server)"
        )
    return key


def make_client(timeout: float, max_retries: int):
    """An ``openai.OpenAI`` client with the key from the environment; the base URL follows OPENAI_BASE_URL."""
    import openai

    return openai.OpenAI(api_key=api_key_from_env(), timeout=float(timeout), max_retries=int(max_retries))


def redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return text


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def usage_of(response) -> Usage:
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", 0) if usage is not None else 0
    completion = getattr(usage, "completion_tokens", 0) if usage is not None else 0
    return Usage(int(prompt or 0), int(completion or 0))


def answer_text(response, image_id: str) -> str:
    """The message content of a chat completion, or a LabelError when the body is not one."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        content = None
    if not isinstance(content, str):
        raise LabelError(
            f"image {image_id}: the API answered with a body that is not a chat completion "
            f"(no choices[0].message.content)"
        )
    return content


def estimated_cost(model: str, usage: Usage) -> float | None:
    """USD for the tokens used, from :data:`PRICES_PER_MILLION_TOKENS`; None for an unknown model."""
    prices = PRICES_PER_MILLION_TOKENS.get(model)
    if prices is None:
        prefixes = [m for m in PRICES_PER_MILLION_TOKENS if model.startswith(m + "-")]
        if not prefixes:
            return None
        prices = PRICES_PER_MILLION_TOKENS[max(prefixes, key=len)]
    return (usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]) / 1e6


def api_error_to_label_error(
    exc: Exception, image_id: str, key: str | None, base_url: str | None = None
) -> LabelError:
    """A clear, key-free message for an error the openai client raised after its retries; a connection error
    names the URL it tried (the client's base URL: ``OPENAI_BASE_URL`` or the OpenAI default)."""
    import openai

    where = f" at {str(base_url).rstrip('/')}" if base_url else ""

    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return LabelError(
            f"the OpenAI API refused the request for image {image_id} (HTTP {exc.status_code}): "
            f"set {API_KEY_ENV} to a valid API key with access to the model; stopping"
        )
    if isinstance(exc, openai.APITimeoutError):
        return LabelError(
            f"image {image_id}: the OpenAI API{where} did not answer within labels.timeout, even after "
            f"labels.max_retries retries"
        )
    if isinstance(exc, openai.APIConnectionError):
        return LabelError(
            f"image {image_id}: cannot reach the OpenAI API{where} ({redact(str(exc), key)}); check the network, "
            f"or {BASE_URL_ENV} for another compatible server"
        )
    if isinstance(exc, openai.APIStatusError):
        return LabelError(
            f"image {image_id}: the OpenAI API answered HTTP {exc.status_code} "
            f"({redact(str(exc.message), key)[:300]})"
        )
    return LabelError(f"image {image_id}: OpenAI API error ({type(exc).__name__}: {redact(str(exc), key)[:300]})")


# --- the answer cache ----------------------------------------------------------------------------


class AnswerCache:
    """One file per question, ``<folder>/<question key>.json`` = ``{"image_id", "request", "raw", "usage"}``.

    The question key covers the request fingerprint (model, temperature, prompt, format) and the sha256 of
    the image's bytes, nothing else: no shard, hash or limit, so an answer outlives every run layout and
    concurrent jobs never write the same file. Each :meth:`put` is atomic.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.is_file():
            raise LabelError(f"{self.folder}: expected the answer cache folder, found a file")

    def path(self, fingerprint: str, image_digest: str) -> Path:
        return self.folder / f"{short_hash({'request': fingerprint, 'image': image_digest})}.json"

    def get(self, fingerprint: str, image_digest: str) -> str | None:
        path = self.path(fingerprint, image_digest)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise LabelError(f"{path}: unreadable cached answer ({exc}); delete it to ask again") from None
        if isinstance(entry, dict) and entry.get("request") == fingerprint and isinstance(entry.get("raw"), str):
            return entry["raw"]
        return None

    def put(self, image_id: str, fingerprint: str, image_digest: str, raw: str, usage: Usage) -> Path:
        path = self.path(fingerprint, image_digest)
        atomic_write_json(path, {"image_id": image_id, "request": fingerprint, "image_sha256": image_digest,
                                 "raw": raw, "usage": usage.as_dict()})
        return path


# --- asking --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveSettings:
    model: str = "gpt-4o"
    temperature: float = 0.0
    prompt: str | None = None
    json_schema: bool = False
    timeout: float = 60.0
    max_retries: int = 5

    @classmethod
    def from_options(cls, params: dict, options: dict) -> "LiveSettings":
        """From the hashed stage parameters (model, temperature, prompt, json_schema) and ``cfg['labels']``."""
        merged = {**options, **params}
        return cls(
            model=merged.get("model", cls.model),
            temperature=float(merged.get("temperature", cls.temperature)),
            prompt=merged.get("prompt"),
            json_schema=bool(merged.get("json_schema", False)),
            timeout=float(options.get("timeout", cls.timeout)),
            max_retries=int(options.get("max_retries", cls.max_retries)),
        )


def request_fingerprint(settings: LiveSettings, prompt: str) -> str:
    return short_hash(
        {"model": settings.model, "temperature": settings.temperature, "prompt": prompt, "json_schema": settings.json_schema}
    )


def question_of(dataset, settings: LiveSettings) -> tuple[str, str]:
    """The prompt every image of ``dataset`` is asked with, and its request fingerprint (the answer cache key)."""
    template = prompt_template(settings.prompt, settings.json_schema)
    prompt = build_prompt(template, categories_text(dataset.name, dataset.vocabulary))
    return prompt, request_fingerprint(settings, prompt)


def unanswered(dataset, image_ids: list[str], settings: LiveSettings, cache_dir, digest=sha256_of_file) -> list[str]:
    """The images whose question has no answer in the answer cache folder: what a job would ask the API.
    ``digest(path)``: the image's sha256 (a digest cache's, at parse time)."""
    _, fingerprint = question_of(dataset, settings)
    cache = AnswerCache(cache_dir)
    return [i for i in image_ids if cache.get(fingerprint, digest(dataset.image_path(i))) is None]


def ask_one(client, settings: LiveSettings, prompt: str, image_path, image_id: str) -> tuple[str, Usage]:
    """One chat completion for one image; errors come back as LabelError without the key."""
    import openai

    kwargs = {
        "model": settings.model,
        "messages": build_messages(prompt, image_data_url(image_path)),
        "temperature": settings.temperature,
    }
    fmt = response_format(settings.json_schema)
    if fmt is not None:
        kwargs["response_format"] = fmt
    try:
        response = client.chat.completions.create(**kwargs)
    except openai.OpenAIError as exc:
        key, url = getattr(client, "api_key", None), getattr(client, "base_url", None)
        raise api_error_to_label_error(exc, image_id, key, url) from None
    except ValueError as exc:  # a 200 whose body is not JSON
        raise LabelError(
            f"image {image_id}: the API answered with a body that is not a chat completion ({type(exc).__name__})"
        ) from None
    return answer_text(response, image_id), usage_of(response)


def query_answers(
    dataset,
    image_ids: list[str],
    settings: LiveSettings,
    cache_dir: str | os.PathLike,
    log: logging.Logger | None = None,
    client=None,
) -> dict[str, str]:
    """Raw answers for ``image_ids``: from the answer cache folder, else asked one by one and cached
    before the next.

    ``dataset`` provides ``.name``, ``.vocabulary`` and ``.image_path(id)``. The client is created
    only when something has to be asked.
    """
    log = log or LOG
    prompt, fingerprint = question_of(dataset, settings)
    cache = AnswerCache(cache_dir)
    answers: dict[str, str] = {}
    total = Usage()
    asked = 0
    for image_id in image_ids:
        image_path = dataset.image_path(image_id)
        try:
            digest = sha256_of_file(image_path)
        except OSError as exc:
            raise LabelError(f"image {image_id}: cannot read {image_path} ({exc})") from None
        cached = cache.get(fingerprint, digest)
        if cached is not None:
            answers[image_id] = cached
            continue
        if client is None:
            client = make_client(settings.timeout, settings.max_retries)
        raw, usage = ask_one(client, settings, prompt, image_path, image_id)
        cache.put(image_id, fingerprint, digest, raw, usage)
        answers[image_id] = raw
        total = total + usage
        asked += 1
    log.info(usage_summary(settings.model, asked, len(image_ids) - asked, total))
    return answers


def usage_summary(model: str, asked: int, cached: int, usage: Usage) -> str:
    cost = estimated_cost(model, usage)
    cost_text = f"estimated cost ${cost:.4f}" if cost is not None else f"cost unknown for model {model!r}"
    return (
        f"OpenAI {model}: {asked} requests, {cached} answers from the cache; tokens: "
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion; {cost_text}"
    )
