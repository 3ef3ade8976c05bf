"""Model ids on the Hugging Face hub, resolved through huggingface_hub and its local cache.

``resolve_model_path`` turns what the user typed into a local path: an existing directory or .gguf file
is used as is; ``org/name`` becomes a snapshot of only the files the engine reads (config, tokenizer,
generation config, safetensors and their index); ``org/name/file.gguf`` becomes that one GGUF file.

Offline mode (``HF_HUB_OFFLINE=1`` or ``offline=True``) never touches the network: a model that is not
in the cache fails with ModelNotFoundError saying so. The cache location and offline switch are read
from the environment at call time (huggingface_hub reads them once at import).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.loader.errors import ModelLoadError, ModelNotFoundError

HF_FILE_PATTERNS = [
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json", "*.safetensors", "model.safetensors.index.json",
]
# Each part starts with a letter, digit or underscore, so "." and ".." can never be a part.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/\w[\w.-]*)(?:/(?P<file>\w[\w.-]*\.gguf))?$")
_TRUE = {"1", "true", "yes", "on"}


def is_offline(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The hub cache: the argument, else HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """("org/name", "file.gguf" | None) for a hub id, None when ``text`` is not one."""
    match = _HUB_ID.match(text)
    return (match["repo"], match["file"]) if match else None


def resolve_model_path(path_or_id: str, revision: str | None = None, offline: bool | None = None,
                       cache_dir: str | Path | None = None) -> Path:
    """A local directory or .gguf file for ``path_or_id`` (downloading it when online and not cached)."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        return local.absolute()
    parsed = parse_hub_id(path_or_id)
    if parsed is None:
        raise ModelNotFoundError(
            f"no such file or directory, and {path_or_id!r} is not a hub id of the form 'org/name' "
            "or 'org/name/file.gguf'")
    return download_model(parsed[0], revision=revision, filename=parsed[1], offline=offline, cache_dir=cache_dir)


def download_model(repo_id: str, revision: str | None = None, filename: str | None = None,
                   offline: bool | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fetch (or find in the cache, when offline) the files the engine needs; return the local path.

    With ``filename`` (a .gguf file) only that file is fetched and its path returned; otherwise the
    snapshot directory holding the HF_FILE_PATTERNS files.
    """
    import huggingface_hub
    from huggingface_hub import errors

    offline = is_offline(offline)
    cache = hub_cache_dir(cache_dir)
    where = f"model {repo_id!r}" + (f" file {filename!r}" if filename else "") + (
        f" at revision {revision!r}" if revision else "")
    try:
        if filename:
            path = Path(huggingface_hub.hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache, local_files_only=offline))
        else:
            patterns = HF_FILE_PATTERNS if offline else _needed_patterns(repo_id, revision, cache)
            path = Path(huggingface_hub.snapshot_download(
                repo_id, revision=revision, cache_dir=cache, allow_patterns=patterns, local_files_only=offline))
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as err:
        if offline:
            raise ModelNotFoundError(
                f"{where} is not in the hub cache at {cache} and offline mode is on (HF_HUB_OFFLINE); run "
                f"`tritonforge download {repo_id}` where the network is reachable, or pass a local path") from err
        raise ModelNotFoundError(f"{where} is not in the hub cache at {cache} and the hub could not be "
                                 f"reached: {err}") from err
    except errors.GatedRepoError as err:
        raise ModelNotFoundError(f"{where} is gated: accept its license on the hub and log in "
                                 "(HF_TOKEN) first") from err
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, _remote_entry_missing(errors)) as err:
        raise ModelNotFoundError(f"{where} does not exist on the hub (check the id and revision)") from err
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as err:
        raise ModelNotFoundError(f"cannot fetch {where}: {err}") from err
    if filename is None and not (path / "config.json").is_file():
        raise ModelLoadError(f"{where} has no config.json in its snapshot; it is not a Hugging Face "
                             "transformers model (for a GGUF repo name the file: org/name/file.gguf)", path)
    return path


def _remote_entry_missing(errors) -> type:
    """The hub's "file not in the repo" error: RemoteEntryNotFoundError, or EntryNotFoundError before 1.0."""
    return getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


def _needed_patterns(repo_id: str, revision: str | None, cache: Path) -> list[str]:
    """HF_FILE_PATTERNS narrowed to the shards a sharded checkpoint's index names.

    Some repos carry the same weights twice (e.g. a ``consolidated.safetensors`` beside the HF shards);
    when an index exists, only the files it names are fetched.
    """
    import huggingface_hub
    from huggingface_hub import errors

    from engine.loader.safetensors_loader import INDEX_FILE, index_files

    try:
        index = huggingface_hub.hf_hub_download(repo_id, INDEX_FILE, revision=revision, cache_dir=cache)
    except errors.EntryNotFoundError:  # not sharded (also raised, as LocalEntryNotFoundError, when unreachable)
        return HF_FILE_PATTERNS
    return [p for p in HF_FILE_PATTERNS if p != "*.safetensors"] + index_files(Path(index))
