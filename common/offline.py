"""Keep every library off the network. Applied when `common` is imported, before torch/transformers/ultralytics,
mlflow or ray read their settings. Values already set by the user win (setdefault)."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}


def cache_dir() -> Path:
    """Writable cache for mmie and the libraries it drives ($MMIE_CACHE, default ~/.cache/mmie; an empty value is
    unset, never the working directory)."""
    root = Path(os.environ.get("MMIE_CACHE") or Path.home() / ".cache" / "mmie")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / "mmie-cache"
        root.mkdir(parents=True, exist_ok=True)
    return root


def read_cache(path: Path, valid) -> dict:
    """A JSON cache file of key -> value under cache_dir(): a missing, unreadable or garbled file is a miss (a note
    on stderr, rebuilt by the caller); entries whose value fails `valid(value)` are dropped. Never an error: a
    cache only saves time."""
    import json
    import sys

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"cache {path} is unreadable ({str(e)[:80]}); rebuilding it", file=sys.stderr)
        return {}
    if not isinstance(data, dict):
        print(f"cache {path} is not a JSON object; rebuilding it", file=sys.stderr)
        return {}
    return {k: v for k, v in data.items() if valid(v)}


def cached_tensor(path: Path, rows: int, compute, persist: bool = True):
    """A tensor cached as one safetensors file under cache_dir(): read back when the file holds `rows` rows, else
    `compute()`, written atomically when `persist` (concurrent runs may compute the same one). A missing or damaged
    file is a miss, never an error: a cache only saves time."""
    from safetensors.torch import load_file, save

    from common.atomic import atomic_write

    if path.is_file():
        try:
            out = load_file(str(path))["tensor"]
            if out.shape[0] == rows:
                return out
        except Exception:  # safetensors raises its own error types on a truncated or garbled file
            pass
    out = compute().contiguous()
    if persist:
        atomic_write(path, lambda f: f.write(save({"tensor": out})))
    return out


def _quiet_ultralytics_font(config_dir: Path) -> None:
    """ultralytics downloads Arial.ttf for plots unless it finds one: give it matplotlib's DejaVuSans."""
    target = config_dir / "Ultralytics" / "Arial.ttf"
    if target.exists():
        return
    try:
        import matplotlib

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    except (ImportError, OSError):
        pass


def extensions_dir(root: Path) -> Path:
    """Where torch JIT-builds DeepSpeed's ops, one folder per Python environment: a build's flags hold the venv's
    paths, so clones sharing one folder rebuilt the shared-memory comm op (~35 s) each time they took turns."""
    return root / "torch_extensions" / hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]


def apply() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    root = cache_dir()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    os.environ.setdefault("MPLCONFIGDIR", str(root / "matplotlib"))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir(root)))
    _quiet_ultralytics_font(Path(os.environ["YOLO_CONFIG_DIR"]))
