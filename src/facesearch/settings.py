"""Every setting of a facesearch installation, in one place, from where an operator puts it.

Precedence, highest first:

1. a command-line flag (``--home``, ``--db``, ``--port``...), where the command has one;
2. an environment variable ``FACESEARCH_<NAME>`` (``FACESEARCH_PORT=8080``);
3. a file named by ``FACESEARCH_<NAME>_FILE`` (for secrets: Docker/Kubernetes/systemd
   credentials; the file's content, trailing newline stripped, is the value);
4. the home's ``config.json`` (written when the home is created; any setting may be added);
5. the default.

``FACESEARCH_HOME`` itself comes from the flag, the environment or the default only (the
config file lives inside it). Lists (trusted proxies, metrics allow-list, ingest roots) are
comma-separated. Every value is validated; a bad one is a :class:`SettingsError` naming the
variable and the rule in one line. :func:`describe` gives the effective settings with
secrets masked and where each came from (``facesearch config show``).
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from facesearch.errors import FacesearchError

PREFIX = "FACESEARCH_"
MIB = 1024 * 1024
#: Fields holding secrets: masked by :func:`describe`, never written to config.json by us.
SECRETS = ("database_url", "milvus_token")
#: Where the config.json of the home being loaded is (set by :func:`load_settings`).
_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("facesearch_config", default=None)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(FacesearchError):
    """A setting has a value it may not have (named, with the rule, in one line)."""


def _split(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]``; lists (config.json) pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """The effective settings. Read them with :func:`load_settings`, not by constructing this."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", validate_default=True,
                                      case_sensitive=False)

    # -- where things are ----------------------------------------------------------------------------
    home: Path = Field(default_factory=lambda: Path.home() / ".facesearch",
                       description="the home: catalog (SQLite), indexes, thumbnails, config.json")
    backend: Literal["faiss", "milvus"] = Field("faiss", description="vector index backend")
    database_url: SecretStr | None = Field(None, description="catalog database URL (default: SQLite in the home)")
    milvus_uri: str | None = Field(None, description="Milvus server URI (default: milvus-lite file in the home)")
    milvus_token: SecretStr | None = Field(None, description="Milvus token (user:password or API key)")
    faiss_storage: Literal["auto", "ram", "mmap"] = Field(
        "auto", description="FAISS re-rank vectors: ram (float32), mmap (fp16 file), auto = mmap from 1M faces")
    pack: str = Field("buffalo_s", min_length=1, description="model pack name or pinned pack directory")
    threads: int | None = Field(None, ge=1, le=1024, description="inference threads (default: all cores)")
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto", description="inference runtime: auto = OpenVINO on a CPU when installed, else ONNX Runtime")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="OpenVINO precision: auto = bf16 where the CPU has it")
    pg_bin: str | None = Field(None, description="folder with pg_dump/pg_restore for backups (default: PATH)")

    # -- the server ----------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", min_length=1, description="address serve listens on")
    port: int = Field(8000, ge=1, le=65535, description="port serve listens on")
    # The same bounds as api.limits.ServerLimits, which the server builds from these.
    workers: int = Field(2, ge=1, le=64, description="threads doing CPU work (decode, detect, embed) for the API")
    worker_queue: int = Field(8, ge=1, le=10_000,
                              description="requests waiting for a worker before the API answers 503")
    max_upload_bytes: int = Field(25 * MIB, ge=1, description="largest photo or video accepted in one upload")
    max_request_bytes: int = Field(256 * MIB, ge=MIB, description="largest request body accepted")
    max_upload_files: int = Field(200, ge=1, le=100_000, description="most files in one upload request")
    secure_cookies: bool = Field(False, description="mark session cookies Secure (behind HTTPS)")
    retention_hours: float = Field(6.0, gt=0, le=36500 * 24,
                                   description="hours between retention sweeps (erasing expired images)")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="proxy addresses whose X-Forwarded-For/-Proto headers are believed")
    metrics_allow: Annotated[list[Network], NoDecode] = Field(
        default_factory=list, description="networks besides loopback that may read /metrics")
    ingest_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="folders the server may ingest from by path (none: uploads only)")
    disk_floor_mb: int = Field(512, ge=0, description="/ready fails when the home's disk has less free space")

    # -- logs ----------------------------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field("text", description="text, or one JSON object per line")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="log level")

    @field_validator("trusted_proxies", "metrics_allow", "ingest_roots", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network (or *)") from None
        return value

    @field_validator("ingest_roots")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{root} is not an absolute path")
        return [root.resolve() for root in value]

    @field_validator("home")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileSettingsSource(settings_cls), JsonConfigSource(settings_cls)

    # -- uses ----------------------------------------------------------------------------------------

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def metrics_allowed(self, client: str | None) -> bool:
        """May this peer address read /metrics? Loopback always; else only the allow-list."""
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        if address.is_loopback:
            return True
        return any(address.version == net.version and address in net for net in self.metrics_allow)

    def ingest_allowed(self, path: str | os.PathLike) -> bool:
        """Is this path (links resolved) inside one of the allowed ingest roots?"""
        return under_any_root(path, self.ingest_roots)


def under_any_root(path: str | os.PathLike, roots) -> bool:
    """The one rule for server-side ingest folders: ``path``, links resolved, lies under a root."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


class FileSettingsSource(PydanticBaseSettingsSource):
    """``FACESEARCH_<NAME>_FILE=/run/secrets/x``: the value is that file's content."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = file_variable(field_name)
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as exc:
            raise SettingsError(f"{variable}={path}: cannot read the file ({exc.strerror or exc})") from None

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            if name == "home":
                continue
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                found[name] = _split(value) if _is_list(field) else value
        return found


class JsonConfigSource(PydanticBaseSettingsSource):
    """The home's ``config.json``: any setting by its field name (``"port": 8080``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._stored().get(field_name), field_name, False

    def _stored(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get()
        if path is None or not path.is_file():
            return {}
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(stored, dict):
            raise SettingsError(f"{path}: must hold a JSON object")
        return stored

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {k: v for k, v in self._stored().items() if k in fields and k != "home" and v is not None}


def _is_list(field: FieldInfo) -> bool:
    return "list[" in str(field.annotation)


def env_variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


def file_variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}_FILE"


def _one_line(error: ValidationError, origins: dict[str, str]) -> str:
    """The first problem as ``FACESEARCH_PORT (environment): must be ... (got '0')``."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "?"
        rule = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "***" if name in SECRETS else repr(got)
        origin = origins.get(name, "default")
        where = origin.removeprefix("environment ") if origin.startswith("environment ") else \
            f"{env_variable(name)} (from {origin})"
        problems.append(f"{where}: {rule} (got {shown})")
    return "; ".join(problems)


def load_settings(home: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """The effective settings for ``home`` (flag > env > default) with non-None ``overrides`` on top."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    chosen = home or os.environ.get(env_variable("home")) or Path.home() / ".facesearch"
    root = Path(chosen).expanduser().resolve()
    token = _CONFIG_FILE.set(root / "config.json")
    try:
        try:
            return Settings(**given, home=root)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, _origins(given, home))) from None
    finally:
        _CONFIG_FILE.reset(token)


def _origins(given: dict[str, Any], home: Any) -> dict[str, str]:
    env = EnvSettingsSource(Settings)()
    files = FileSettingsSource(Settings)()
    stored = JsonConfigSource(Settings)()
    origins = {}
    for name in Settings.model_fields:
        if name in given or (name == "home" and home):
            origins[name] = "command line"
        elif name in env:
            origins[name] = f"environment {env_variable(name)}"
        elif name in files:
            origins[name] = f"file {file_variable(name)}={os.environ[file_variable(name)]}"
        elif name in stored:
            origins[name] = "config.json"
        else:
            origins[name] = "default"
    return origins


def environment_overrides(home: str | os.PathLike | None = None) -> dict[str, Any]:
    """Home settings set by ``FACESEARCH_*`` variables or ``*_FILE`` files (validated; secrets in clear).

    :func:`facesearch.home.load_config` lays these over config.json and never writes them there,
    so a database password given by a secret file stays out of the home.
    """
    env = EnvSettingsSource(Settings)()
    files = FileSettingsSource(Settings)()
    named = {**files, **env}
    if not named.keys() - {"home"}:
        return {}
    settings = load_settings(home)
    return {name: (settings.secret(name) if name in SECRETS else getattr(settings, name))
            for name in named if name != "home"}


@dataclass(frozen=True)
class SettingView:
    name: str
    variable: str
    value: Any  # secrets masked
    origin: str
    description: str


def mask(name: str, value: Any) -> Any:
    """A secret made safe to print: URLs keep all but the password, tokens become ``***``."""
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if name == "database_url":
        try:
            from sqlalchemy.engine import make_url

            return make_url(raw).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - unparsable URL: print nothing of it
            return "***"
    return "***"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    return value


def describe(settings: Settings, home: str | os.PathLike | None = None,
             overrides: dict[str, Any] | None = None) -> list[SettingView]:
    """Every setting, its (masked) value and where it came from, in declaration order."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _CONFIG_FILE.set(settings.home / "config.json")
    try:
        origins = _origins(given, home)
    finally:
        _CONFIG_FILE.reset(token)
    views = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = mask(name, value) if name in SECRETS else _plain(value)
        views.append(SettingView(name, env_variable(name), shown, origins[name], field.description or ""))
    return views
