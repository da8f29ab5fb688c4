"""The model a training run starts from: a saved classifier or a pretrained encoder."""

from __future__ import annotations

from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.strategies import transformer_blocks


def build_model(
    config: TrainConfig,
    labels: list[str],
    init_model_dir: str | None,
    teacher_width: int | None = None,
) -> TextClassifier:
    """A saved classifier if given, else a pretrained encoder with a new head.

    Args:
        config: Supplies the encoder, pooling, dropout, ``max_length`` and what
            to freeze (``freeze_embeddings``, ``freeze_layers``).
        labels: Label vocabulary of the head.
        init_model_dir: A :meth:`TextClassifier.save` folder to start from; None
            builds the classifier on ``config.model_name_or_path``.
        teacher_width: Attach a projection of the pooled embedding to this width
            (for representation distillation); None attaches none.

    Returns:
        The classifier in train mode, dropout set to ``config.dropout``.

    Raises:
        ValueError: If the saved classifier has other labels, ``max_length``
            exceeds the encoder's positions or ``freeze_layers`` leaves no block
            to train.
    """
    if init_model_dir is not None:
        model = TextClassifier.load(init_model_dir)
        if model.labels != list(labels):
            raise ValueError(
                f"{init_model_dir} was trained for labels {model.labels}, not {labels}"
            )
    else:
        model = TextClassifier.from_pretrained_encoder(
            config.model_name_or_path, labels, config.dropout, config.pooling
        )
    model.set_dropout(config.dropout)
    if teacher_width is not None:
        model.attach_projection(teacher_width)
    max_positions = model.max_positions
    if max_positions is not None and config.max_length > max_positions:
        raise ValueError(
            f"max_length {config.max_length} exceeds the encoder's "
            f"{max_positions} positions"
        )
    _freeze(model, config)
    return model.train()


def _freeze(model: TextClassifier, config: TrainConfig) -> None:
    """Keep the embeddings and the first ``freeze_layers`` blocks fixed, as asked."""
    if config.freeze_embeddings:
        embeddings = getattr(model.encoder, "embeddings", None)
        (embeddings or model.encoder.get_input_embeddings()).requires_grad_(False)
    if config.freeze_layers:
        blocks = transformer_blocks(model.encoder)
        if config.freeze_layers >= len(blocks):
            raise ValueError(
                f"freeze_layers {config.freeze_layers} leaves none of the encoder's "
                f"{len(blocks)} blocks to train"
            )
        for block in blocks[: config.freeze_layers]:
            block.requires_grad_(False)
