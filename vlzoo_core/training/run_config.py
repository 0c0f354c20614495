"""The schema of a training run (`vlzoo train CONFIG.yaml`). Pure data: no torch, nothing imported by name.

Every section forbids unknown keys; components and losses are chosen by registered name.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from vlzoo_core.config import ComponentSlot, StrictModel
from vlzoo_core.errors import ConfigError
from vlzoo_core.evaluation.metrics import DEFAULT_METRICS, parse_metric

ComponentMode = Literal["frozen", "lora", "full"]


class ModelSection(StrictModel):
    name: str = Field(description="Registered model name or alias (see `vlzoo list`); `--model` overrides it.")
    weights: str | None = Field(
        None, description="None: random init; 'pretrained': the recipe's checkpoint; or a folder / Hub id."
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Recipe fields to change, merged deeply.")


class LoraSection(StrictModel):
    rules: str | None = Field(None, description="Registered LoRA rule set; default: the model's own.")
    components: dict[ComponentSlot, ComponentMode] | None = Field(
        None,
        description="Instead of a rule set: a mode per component. 'lora' adapts every Linear in it, "
        "'full' trains it entirely; components left out are frozen.",
    )
    r: int | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0)
    dropout: float | None = Field(None, ge=0, lt=1)
    init: Literal["gaussian", "default", "pissa", "olora"] | None = None

    @model_validator(mode="after")
    def _rules_or_components(self) -> LoraSection:
        if self.rules is not None and self.components is not None:
            raise ValueError("give either 'rules' or 'components', not both")
        if self.components is not None and not any(mode != "frozen" for mode in self.components.values()):
            raise ValueError("every component is frozen: nothing would be trained")
        return self


class Columns(StrictModel):
    query: str = "query"
    image: str = "image"
    negatives: str | None = Field(None, description="Column with hard-negative page(s) for each row, if any.")


class SyntheticSource(StrictModel):
    pages: int = Field(512, gt=0, description="Number of generated pages (one query each).")
    seed: int = 0
    split: Literal["train", "eval"] = Field("train", description="Eval pages use attribute pairs never in train.")


class DataSource(StrictModel):
    kind: Literal["hub", "parquet", "arrow", "jsonl", "synthetic"]
    path: str | None = Field(None, description="Hub id, or a file / folder / glob for local kinds.")
    split: str = "train"
    revision: str | None = None
    columns: Columns = Field(default_factory=Columns)
    synthetic: SyntheticSource | None = None
    limit: int | None = Field(None, gt=0, description="Use at most this many rows.")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> DataSource:
        if self.kind == "synthetic":
            if self.path is not None:
                raise ValueError("a synthetic source takes no 'path'")
        elif self.path is None:
            raise ValueError(f"a {self.kind!r} source needs 'path'")
        elif self.synthetic is not None:
            raise ValueError("'synthetic' options only apply to kind 'synthetic'")
        return self


class DataSection(StrictModel):
    train: DataSource
    eval: DataSource | None = None
    strict: bool = Field(False, description="Bad rows (unreadable image, empty query) are errors, not skipped.")
    num_workers: int = Field(0, ge=0)


class LossSection(StrictModel):
    name: str = Field("colbert_ce", description="Registered loss name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Validated by the loss's own config.")


OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused", "adafactor": "adafactor",
              "adamw_8bit": "adamw_bnb_8bit"}
"""The optimizers a config names -> transformers' names for them (8-bit AdamW needs bitsandbytes)."""


class OptimSection(StrictModel):
    optimizer: Literal[tuple(OPTIMIZERS)] = "adamw_torch"  # type: ignore[valid-type]
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0)
    per_device_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    grad_cache: bool = Field(
        True,
        description="Accumulate with cached gradients: the accumulated chunks form ONE contrastive batch, "
        "so negatives come from all per_device_batch_size * gradient_accumulation_steps rows.",
    )
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _length(self) -> OptimSection:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set 'epochs' or 'max_steps'")
        return self


class EvalSection(StrictModel):
    metrics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        description="Retrieval metrics at a cut-off, computed as `vlzoo eval` computes them (MTEB's): "
        "ndcg@K, map@K, recall@K, precision@K, hit_rate@K or mrr@K.",
    )
    interval: int | None = Field(None, gt=0, description="Evaluate every N steps (None: only before and after).")
    batch_size: int = Field(16, gt=0)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        for name in names:
            parse_metric(name)  # a ValueError names the accepted forms
        return names


class OutputSection(StrictModel):
    dir: Path
    save_interval: int | None = Field(None, gt=0, description="Checkpoint every N steps (None: only at the end).")
    keep: int | None = Field(2, gt=0, description="How many checkpoints to keep.")


class LoggingSection(StrictModel):
    report_to: list[Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]] = Field(
        default_factory=lambda: ["none"]
    )
    interval: int = Field(10, gt=0, description="Log every N steps.")
    progress: bool = Field(True, description="Show progress bars (training, evaluation, embedding).")


class RunConfig(StrictModel):
    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection
    eval: EvalSection = Field(default_factory=EvalSection)
    output: OutputSection
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


def _field_names(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """The field names valid at `location` (a pydantic error path) inside `model`, for near-miss hints."""
    current: Any = model
    for part in location[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        annotation = current.model_fields[part].annotation
        current = next((arg for arg in getattr(annotation, "__args__", ()) if isinstance(arg, type)
                        and issubclass(arg, BaseModel)), annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe_config_error(exc: ValidationError, source: str, root: type[BaseModel] = RunConfig) -> str:
    """One line naming each failing field path, with a 'did you mean' for misspelled keys."""
    parts = []
    for err in exc.errors():
        location = tuple(err["loc"])
        path = ".".join(str(p) for p in location) or "<root>"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(location[-1]), _field_names(root, location), n=1, cutoff=0.6)
            message = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        parts.append(f"{path}: {message}")
    return f"{source}: " + "; ".join(parts)


def parse_run_config(data: Any, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_config_error(exc, source)) from exc


def load_run_config(path: str | Path, *, model: str | None = None, output: str | Path | None = None) -> RunConfig:
    """Read a YAML run config with the safe loader.

    `model` (the CLI's --model) replaces model.name; `output` (--output) replaces output.dir and, unlike
    paths in the file, is taken relative to the current directory.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optim, output, ...)")
    if model is not None:
        section = data.get("model")
        data = {**data, "model": {**(section if isinstance(section, dict) else {}), "name": model}}
    if output is not None:
        section = data.get("output")
        data = {**data, "output": {**(section if isinstance(section, dict) else {}), "dir": str(Path(output).resolve())}}
    return parse_run_config(data, str(path))
