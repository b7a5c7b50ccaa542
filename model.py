"""The networks: a transformer teacher with a first-token head, and GloVe students
(TextCNN, DenseNet-CNN, DenseNet with Dynamic Self-Attention, BiLSTM); the distillation
loss; self-describing checkpoints.

Every network's `forward(ids, lengths)` takes ids `[batch, seq]` (padding after each
sentence) and lengths `[batch]`, and returns logits `[batch, num_labels]`. Students mask
padding everywhere, so a sentence gets the same logits alone or in a padded batch.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from util import (
    CNNConfig,
    Config,
    DenseNetConfig,
    DSAConfig,
    UserError,
    atomic_path,
    config_from_dict,
    config_to_dict,
    write_json,
)

logger = logging.getLogger(__name__)


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """`[batch, width]` bool, True on real tokens."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

class MaskedTextCNN(nn.Module):
    """Convolutions of several widths over `[batch, seq, in_dim]`, ReLU, max over time.

    Only windows inside the sentence are pooled (a window that reaches into padding is
    excluded), and sentences shorter than the widest kernel are zero-padded up to it,
    so a sentence's output does not depend on the batch it is in.
    """

    def __init__(self, in_dim: int, num_filters: int, kernel_sizes: list[int]):
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, num_filters, k) for k in self.kernel_sizes)
        self.out_dim = num_filters * len(self.kernel_sizes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C], zero on padding
        # Append max_k - 1 zero steps once (no data-dependent branch, so the graph exports
        # to TorchScript/ONNX with a dynamic length), then give each width only the windows a
        # sentence of T tokens has, max(T - k + 1, 1): a quarter fewer multiply-adds than
        # convolving the padded input, which is most of the CNN's time at batch 1.
        width = torch.as_tensor(x.size(1))  # a tensor, so the exported slices below stay dynamic
        x = F.pad(x, (0, 0, 0, max(self.kernel_sizes) - 1)).transpose(1, 2)  # [B, C, T + max_k - 1]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            h = F.relu(conv(x[:, :, :torch.clamp(width, min=k)]))  # [B, F, max(T, k) - k + 1]
            # window t covers tokens t..t+k-1: valid if inside the sentence, and window 0
            # always counts (a sentence shorter than k is seen zero-padded, as when alone);
            # ReLU outputs are >= 0 and window 0 is always valid, so zeroing the invalid
            # windows leaves the maximum unchanged
            valid = torch.clamp(lengths - k + 1, min=1)  # [B]
            mask = length_mask(valid, h.size(2))  # [B, max(T, k) - k + 1]
            pooled.append((h * mask[:, None, :].to(h.dtype)).amax(dim=2))  # [B, F]
        return torch.cat(pooled, dim=1)  # [B, F * len(kernel_sizes)]


class DenseNet1d(nn.Module):
    """A 1-D DenseNet over token vectors.

    A 1x1 conv maps the embeddings to `first_num_filters` channels. Each entry of
    `kernel_sizes`, e.g. [3, 5], is one dense layer of two convolutions: width 3 from all
    channels so far down to `num_filters`, then width 5 (`num_filters` → `num_filters`);
    its output is concatenated to the feature maps (the dense connection). A final 1x1
    conv maps everything to `last_num_filters`. 'Same' padding keeps one output per token;
    padding positions are zeroed after every convolution, so they look exactly like the
    zero padding a lone sentence gets at its end."""

    def __init__(self, in_dim: int, cfg: DenseNetConfig):
        super().__init__()
        self.first = nn.Conv1d(in_dim, cfg.first_num_filters, 1)
        channels = cfg.first_num_filters
        layers = []
        for kernels in cfg.kernel_sizes:
            widths = [channels] + [cfg.num_filters] * len(kernels)
            layers.append(nn.ModuleList(
                nn.Conv1d(widths[i], cfg.num_filters, k, padding="same") for i, k in enumerate(kernels)
            ))
            channels += cfg.num_filters
        self.layers = nn.ModuleList(layers)
        self.last = nn.Conv1d(channels, cfg.last_num_filters, 1)
        self.out_dim = cfg.last_num_filters

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C]; mask: [B, T] bool
        m = mask[:, None, :].to(x.dtype)  # [B, 1, T]
        features = F.relu(self.first(x.transpose(1, 2))) * m  # [B, first, T]
        for convs in self.layers:
            h = features
            for conv in convs:
                h = F.relu(conv(h)) * m  # [B, growth, T]
            features = torch.cat([features, h], dim=1)  # [B, channels + growth, T]
        out = F.relu(self.last(features)) * m  # [B, last, T]
        return out.transpose(1, 2)  # [B, T, last]


class DynamicSelfAttention(nn.Module):
    """Dynamic Self-Attention (Yoon, Lee, Lee 2018): per head, project words
    (linear + leaky ReLU), then `r` routing iterations: a = softmax(q) over the real words,
    s = sum_i a_i x_i, z = tanh(s), q_i += x_i . z. Output: the heads' last z, concatenated."""

    def __init__(self, in_dim: int, cfg: DSAConfig):
        super().__init__()
        self.heads, self.dim, self.iterations = cfg.num_attentions, cfg.dsa_dim, cfg.r
        self.proj = nn.Linear(in_dim, self.heads * self.dim)
        self.out_dim = self.heads * self.dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C]; mask: [B, T] bool
        b, t, _ = x.shape
        words = F.leaky_relu(self.proj(x)).view(b, t, self.heads, self.dim)  # [B, T, H, D]
        q = x.new_zeros(b, t, self.heads)  # [B, T, H] routing logits
        pad = ~mask[:, :, None]  # [B, T, 1]
        z = x.new_zeros(b, self.heads, self.dim)
        for it in range(self.iterations):
            a = torch.softmax(q.masked_fill(pad, float("-inf")), dim=1)  # [B, T, H]
            s = torch.einsum("bth,bthd->bhd", a, words)  # [B, H, D]
            z = torch.tanh(s)
            if it + 1 < self.iterations:
                q = q + torch.einsum("bthd,bhd->bth", words, z)
        return z.reshape(b, self.heads * self.dim)  # [B, H * D]


class ClassifierHead(nn.Module):
    """dropout → [linear → ReLU → dropout] → linear; the hidden layer is skipped when
    `hidden` is 0."""

    def __init__(self, in_dim: int, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden > 0:
            layers += [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------

class GloveStudent(nn.Module):
    """Common part of the students: a GloVe embedding table (`<pad>` row kept at zero)."""

    required_sections: tuple[str, ...] = ()

    def __init__(self, config: Config, vocab_size: int):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(vocab_size, config.token_emb_dim, padding_idx=config.pad_token_id)
        self.embedding.weight.requires_grad_(not config.freeze_emb)
        self.emb_dropout = nn.Dropout(config.dropout)

    def embed(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids `[B, T]` → (vectors `[B, T, E]` zeroed on padding, mask `[B, T]`)."""
        mask = length_mask(lengths, ids.size(1))
        x = self.emb_dropout(self.embedding(ids)) * mask[:, :, None].to(self.embedding.weight.dtype)
        return x, mask


class GloveCNN(GloveStudent):
    """GloVe → TextCNN (max over time) → fully connected → logits."""

    required_sections = ("cnn",)

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        cnn: CNNConfig = config.cnn
        self.cnn = MaskedTextCNN(config.token_emb_dim, cnn.num_filters, cnn.kernel_sizes)
        self.head = ClassifierHead(self.cnn.out_dim, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, _ = self.embed(ids, lengths)  # [B, T, E]
        return self.head(self.cnn(x, lengths))  # [B, K]


class DenseNetCNN(GloveStudent):
    """GloVe → 1-D DenseNet → TextCNN → logits."""

    required_sections = ("densenet", "cnn")

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        self.densenet = DenseNet1d(config.token_emb_dim, config.densenet)
        self.cnn = MaskedTextCNN(self.densenet.out_dim, config.cnn.num_filters, config.cnn.kernel_sizes)
        self.head = ClassifierHead(self.cnn.out_dim, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(ids, lengths)  # [B, T, E]
        h = self.densenet(x, mask)  # [B, T, last]
        return self.head(self.cnn(h, lengths))  # [B, K]


class DenseNetDSA(GloveStudent):
    """GloVe → 1-D DenseNet → Dynamic Self-Attention → fully connected → logits."""

    required_sections = ("densenet", "dsa")

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        self.densenet = DenseNet1d(config.token_emb_dim, config.densenet)
        self.dsa = DynamicSelfAttention(self.densenet.out_dim, config.dsa)
        self.head = ClassifierHead(self.dsa.out_dim, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(ids, lengths)  # [B, T, E]
        h = self.densenet(x, mask)  # [B, T, last]
        return self.head(self.dsa(h, mask))  # [B, K]


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first `length` steps of `[B, T, C]`, leaving padding in place
    (its own inverse)."""
    t = torch.arange(x.size(1), device=x.device)[None, :]  # [1, T]
    last = lengths[:, None] - 1  # [B, 1]
    index = torch.where(t <= last, last - t, t)  # [B, T]
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(2)))


class GloveBiLSTM(GloveStudent):
    """GloVe → bidirectional LSTM → the last forward and backward states concatenated →
    ReLU layer → logits (Tang et al. 2019's student).

    Padding is never read, without packed sequences (which ONNX export does not take): the
    forward LSTM's state at a sentence's last token has not seen the padding after it, and
    the backward LSTM runs forward over each sentence reversed within its length, so its
    padding also comes after the sentence."""

    required_sections = ("lstm",)

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        lstm = config.lstm
        sizes = [config.token_emb_dim] + [2 * lstm.hidden_size] * (lstm.num_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(n, lstm.hidden_size, batch_first=True) for n in sizes)
        self.backward_lstms = nn.ModuleList(nn.LSTM(n, lstm.hidden_size, batch_first=True) for n in sizes)
        self.head = ClassifierHead(2 * lstm.hidden_size, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, _ = self.embed(ids, lengths)  # [B, T, E]
        lengths = lengths.clamp(min=1)
        for fwd, bwd in zip(self.forward_lstms, self.backward_lstms):
            out_f, _ = fwd(x)  # [B, T, H]
            out_b = reverse_within_length(bwd(reverse_within_length(x, lengths))[0], lengths)  # [B, T, H]
            x = torch.cat([out_f, out_b], dim=2)  # [B, T, 2H]: the next layer's input
        last = (lengths - 1)[:, None, None].expand(-1, 1, out_f.size(2))  # [B, 1, H]
        # the forward state at the last token, and the backward state after reading back to the first
        final = torch.cat([out_f.gather(1, last)[:, 0], out_b[:, 0]], dim=1)  # [B, 2H]
        return self.head(final)


STUDENTS: dict[str, type[GloveStudent]] = {
    "cnn": GloveCNN,
    "densenet-cnn": DenseNetCNN,
    "densenet-dsa": DenseNetDSA,
    "bilstm": GloveBiLSTM,
}


def build_student(config: Config, vocab_size: int, num_labels: int) -> GloveStudent:
    """A student for `config.enc_class`, randomly initialised (copy GloVe in afterwards)."""
    if config.enc_class not in STUDENTS:
        raise ValueError(f"unknown enc_class {config.enc_class!r}; expected one of {sorted(STUDENTS)}")
    return STUDENTS[config.enc_class](config, vocab_size, num_labels)


# ---------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------

# Teacher `enc_class` -> how the sentence vector is pooled (TransformerClassifier's `pooling`).
TEACHER_HEADS: dict[str, str] = {"cls": "first", "mean": "mean"}


class TransformerClassifier(nn.Module):
    """Any Hugging Face encoder (`AutoModel`) with dropout and a linear layer over a sentence
    vector pooled from its last hidden states: the first token's (`pooling="first"`: [CLS] for
    BERT/ELECTRA, <s> for RoBERTa) or the mean over the sentence's real tokens (`"mean"`, what
    sentence-transformers backbones such as all-MiniLM-L6-v2 were trained to produce)."""

    def __init__(self, encoder_config: Any, num_labels: int, dropout: float, encoder: nn.Module | None = None,
                 pooling: str = "first"):
        super().__init__()
        from transformers import AutoModel

        if pooling not in TEACHER_HEADS.values():
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {sorted(TEACHER_HEADS.values())}")
        # `encoder` lets a caller pass pretrained weights; otherwise built from the config.
        self.encoder = encoder if encoder is not None else AutoModel.from_config(encoder_config)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.size(1))  # [B, T], True on real tokens
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, T, H]
        if self.pooling == "first":
            pooled = hidden[:, 0]  # [B, H]
        else:
            # Padding is zeroed before the sum, so a sentence pools the same alone or padded.
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        return self.classifier(self.dropout(pooled))  # [B, K]


def load_pretrained_teacher(path: str | Path, num_labels: int, dropout: float,
                            pooling: str = "first") -> TransformerClassifier:
    """A teacher whose encoder is read from a Hugging Face model directory (or hub name)."""
    from transformers import AutoConfig, AutoModel

    path = str(path)
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json)")
    try:
        encoder_config = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a Hugging Face encoder: {str(e).splitlines()[0]}") from e
    return TransformerClassifier(encoder_config, num_labels, dropout, encoder=encoder, pooling=pooling)


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

CRITERIA = ("CrossEntropyLoss", "MSELoss", "KLDivLoss")


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, criterion: str, temperature: float = 1.0
) -> torch.Tensor:
    """Loss between student logits s and teacher logits t, both `[batch, K]`, averaged over the batch.

    - `MSELoss`:  mean over batch and classes of (s - t)^2  (Tang et al. 2019).
    - `KLDivLoss`: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes
      (Hinton et al. 2015; the T^2 keeps gradient sizes comparable across T).
    - `CrossEntropyLoss`: T^2 * -sum_k softmax(t/T)_k log softmax(s/T)_k, soft targets.
    """
    if criterion == "MSELoss":
        return F.mse_loss(student_logits, teacher_logits)
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    q = F.softmax(teacher_logits / temperature, dim=-1)
    if criterion == "KLDivLoss":
        return F.kl_div(log_p, q, reduction="batchmean") * temperature**2
    if criterion == "CrossEntropyLoss":
        return -(q * log_p).sum(dim=-1).mean() * temperature**2
    raise ValueError(f"unknown criterion {criterion!r}; expected one of {list(CRITERIA)}")


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts, with and without the embedding tables."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return {"parameters": total, "parameters_without_embeddings": total - embedding}


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------
# A student checkpoint is one `torch.save` file of plain types and tensors (so it loads
# with `weights_only=True`): model config, vocabulary, labels, weights, and for resuming
# the optimizer, scheduler, epoch/step, best metric and RNG states.
# A teacher checkpoint is a directory: the encoder's Hugging Face config, the tokenizer,
# `model.safetensors` (the whole classifier), `distil_config.json` (our config and labels)
# and `training_state.pt` (optimizer etc., loaded with `weights_only=True`).

CHECKPOINT_FORMAT = "distil-glove/1"


def save_student_checkpoint(path: str | Path, model: GloveStudent, vocab: list[str], labels: list[str],
                            state: dict | None = None) -> None:
    """Write a self-describing student checkpoint atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(model.config),
        "vocab": list(vocab),
        "labels": list(labels),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "state": state or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _torch_load(path: Path, what: str) -> Any:
    """`torch.load` with `weights_only=True`: a pickle that would run code is refused."""
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive
                raise UserError(f"{path}: not a loadable {what} (not a torch.save archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise UserError(f"{path}: file not found (expected {what})") from e
    except IsADirectoryError as e:
        raise UserError(f"{path}: is a directory (expected {what})") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError) as e:
        # weights_only refusals (UnpicklingError) and truncated zips (RuntimeError) land here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a loadable {what} ({first[:200]})") from e


def load_student_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                            ) -> tuple[GloveStudent, list[str], list[str], dict]:
    """Rebuild a student from its checkpoint alone: (model in eval mode, vocab, labels, state)."""
    path = Path(path)
    payload = _torch_load(path, "student checkpoint from train.py")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a distil-glove student checkpoint")
    config = config_from_dict(payload["config"], f"{path} (config)")
    if config.is_transformer:
        raise UserError(f"{path}: holds a transformer config; use --bert_output_dir for teachers")
    vocab, labels = payload["vocab"], payload["labels"]
    model = build_student(config, len(vocab), len(labels))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return model, vocab, labels, payload.get("state", {})


def save_teacher(out_dir: str | Path, model: TransformerClassifier, config: Config, tokenizer: Any,
                 labels: list[str], lowercase: bool, state: dict | None = None) -> None:
    """Write a teacher directory; `model.safetensors` last, so its presence marks a complete save."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / "distil_config.json", {
        "format": CHECKPOINT_FORMAT, "config": config_to_dict(config), "labels": list(labels),
        "lowercase": lowercase,
    })
    if state is not None:
        with atomic_path(out_dir / "training_state.pt") as tmp:
            torch.save(state, tmp)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))


def load_teacher(out_dir: str | Path, device: torch.device | str = "cpu"
                 ) -> tuple[TransformerClassifier, Config, Any, list[str], bool]:
    """Rebuild a fine-tuned teacher from its directory: (model in eval mode, config,
    tokenizer, labels, lowercase)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    out_dir = Path(out_dir)
    meta_path = out_dir / "distil_config.json"
    weights_path = out_dir / "model.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise UserError(f"{out_dir}: not a teacher directory from train.py (needs distil_config.json and "
                        "model.safetensors)")
    from util import read_json

    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{meta_path}: not a distil-glove teacher description")
    config = config_from_dict(meta["config"], f"{meta_path} (config)")
    labels = list(meta["labels"])
    try:
        encoder_config = AutoConfig.from_pretrained(out_dir)
        tokenizer = AutoTokenizer.from_pretrained(out_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"{out_dir}: cannot read the encoder config or tokenizer: {str(e).splitlines()[0]}") from e
    model = TransformerClassifier(encoder_config, len(labels), config.dropout,
                                  pooling=TEACHER_HEADS[config.enc_class])
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights_path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"{weights_path}: weights do not fit the stored config: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return model, config, tokenizer, labels, bool(meta.get("lowercase", False))


def load_training_state(path: str | Path) -> dict:
    """Read a teacher's `training_state.pt` (weights_only)."""
    return _torch_load(Path(path), "training state from train.py")


def init_embeddings(model: GloveStudent, matrix: torch.Tensor) -> None:
    """Copy the GloVe matrix `[vocab, dim]` into the student's embedding table."""
    if tuple(matrix.shape) != tuple(model.embedding.weight.shape):
        raise UserError(
            f"embedding matrix shape {tuple(matrix.shape)} does not match the model's "
            f"{tuple(model.embedding.weight.shape)} (token_emb_dim in the config vs preprocess.py's --embedding_path)"
        )
    with torch.no_grad():
        model.embedding.weight.copy_(matrix)


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------

def logits_for_batches(model: nn.Module, ids: list[list[int]], batches: list[list[int]], pad_id: int,
                       device: torch.device, amp_dtype: torch.dtype | None = None, desc: str = "predict",
                       progress: bool = True) -> torch.Tensor:
    """Logits (float32, CPU) for the given batches of indices into `ids`, rows in the order
    of the batches concatenated: `[sum of batch sizes, K]`."""
    from tqdm import tqdm

    from dataset import pad_batch

    model.eval()
    parts = []
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            x, lengths = pad_batch([ids[i] for i in batch], pad_id)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                parts.append(model(x.to(device), lengths.to(device)).float().cpu())  # [B, K]
    return torch.cat(parts)


def predict_logits(model: nn.Module, ids: list[list[int]], batch_size: int, pad_id: int,
                   device: torch.device, desc: str = "predict", amp_dtype: torch.dtype | None = None,
                   progress: bool = True) -> torch.Tensor:
    """Logits `[n, K]` (float32, CPU) for id lists, in input order. Batches are sorted by
    length so little time goes to padding."""
    from dataset import length_sorted_batches

    batches = length_sorted_batches([len(s) for s in ids], batch_size)
    logits = logits_for_batches(model, ids, batches, pad_id, device, amp_dtype, desc, progress)
    order = torch.tensor([i for batch in batches for i in batch])
    out = torch.empty_like(logits)
    out[order] = logits  # back to input order
    return out


# ---------------------------------------------------------------------------
# Loading any trained model for inference
# ---------------------------------------------------------------------------

class Predictor:
    """A trained teacher or student with its own tokenization: sentences in, logits out."""

    def __init__(self, model: nn.Module, config: Config, labels: list[str], pad_id: int, encode: Any, path: str):
        self.model, self.config, self.labels, self.pad_id, self.path = model, config, labels, pad_id, path
        self.encode = encode  # list[str] -> list[list[int]], exactly as at training time
        self.parameter_counts = count_parameters(model)
        self.runtime = "pytorch"
        self.torch_model = model  # kept when an ONNX Runtime session takes `model`'s place

    @classmethod
    def for_student(cls, model: GloveStudent, vocab: list[str], labels: list[str], path: str) -> "Predictor":
        """A student with the GloVe tokenization its vocabulary and config imply."""
        from dataset import GloveEncoder

        glove = GloveEncoder(vocab, model.config.lowercase, model.config.n_ctx)
        return cls(model, model.config, labels, model.config.pad_token_id,
                   lambda sentences: [glove(s) for s in sentences], path)

    def onnx_path(self, quantized: bool = False) -> Path:
        """Where `--convert_onnx` writes: beside the student checkpoint, or in the teacher directory."""
        base = Path(self.path) / "model.onnx" if self.config.is_transformer else Path(f"{self.path}.onnx")
        return base.with_name(base.name.replace(".onnx", ".int8.onnx")) if quantized else base

    def use_onnxruntime(self, quantized: bool, num_threads: int) -> None:
        """Swap the PyTorch model for an ONNX Runtime session of its exported file."""
        path = self.onnx_path(quantized)
        if not path.exists():
            raise UserError(f"{path}: not found; export it first with evaluate.py --convert_onnx"
                            + (" --quantize_onnx" if quantized else ""))
        self.model = OrtModel(path, num_threads)
        self.runtime = "onnxruntime-int8" if quantized else "onnxruntime"

    def logits(self, sentences: list[str], batch_size: int, device: torch.device, progress: bool = True
               ) -> torch.Tensor:
        """`[n, K]` logits in input order."""
        return predict_logits(self.model, self.encode(sentences), batch_size, self.pad_id, device,
                              desc="predict", progress=progress)


def load_predictor(is_transformer: bool, bert_output_dir: str | Path, model_path: str | Path,
                   device: torch.device) -> Predictor:
    """Rebuild a teacher (from its directory) or a student (from its checkpoint) for inference."""
    from dataset import TransformerEncoder

    if is_transformer:
        model, config, tokenizer, labels, lowercase = load_teacher(bert_output_dir, device)
        encoder = TransformerEncoder(tokenizer, lowercase, config.n_ctx)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return Predictor(model, config, labels, pad_id, encoder.encode_many, str(bert_output_dir))
    model, vocab, labels, _ = load_student_checkpoint(model_path, device)
    return Predictor.for_student(model, vocab, labels, str(model_path))


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------

def export_onnx(model: nn.Module, path: str | Path, example_ids: torch.Tensor) -> None:
    """Export `model(ids, lengths) -> logits` with dynamic batch and sequence axes."""
    import warnings

    model = model.cpu().eval()
    lengths = torch.full((example_ids.size(0),), example_ids.size(1), dtype=torch.long)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(
            model, (example_ids, lengths), str(tmp), input_names=["ids", "lengths"], output_names=["logits"],
            dynamic_axes={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )


def quantize_onnx(src: str | Path, dst: str | Path) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)


class OrtModel:
    """An ONNX Runtime session behind the same call as the PyTorch models:
    `model(ids [B, T], lengths [B]) -> logits [B, K]` (CPU tensors)."""

    def __init__(self, path: str | Path, num_threads: int = 0):
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.NoSuchFile, ort_errors.InvalidProtobuf,
                ort_errors.RuntimeException, ort_errors.InvalidGraph) as e:
            raise UserError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from e

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feed = {"ids": ids.cpu().numpy(), "lengths": lengths.cpu().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def eval(self) -> "OrtModel":
        return self

    def parameters(self):  # no torch parameters; lets count_parameters and callers work unchanged
        return iter(())

    def modules(self):
        return iter(())
