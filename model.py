"""The networks and the distillation loss.

Teachers: any `AutoModel` encoder with the seed's linear head over the first token or the
mean of the real tokens (`TransformerClassifier`), or a Hugging Face sequence classifier with
its own head (`SequenceClassifier`). Students over GloVe vectors: the seed's TextCNN,
DenseNet-CNN and DenseNet with Dynamic Self-Attention, Tang et al.'s BiLSTM, and a bag of
n-grams (fastText's model, or with hidden layers a deep averaging network). A student takes
its hyperparameters (a `Config`, plain data from config.py) and sizes; no model reads files.

Every network's `forward(ids, lengths)` takes ids `[batch, seq]` (padding after each
sentence) and lengths `[batch]`, and returns logits `[batch, num_labels]`. Students mask
padding everywhere, so a sentence gets the same logits alone or in a padded batch.

Sentence pairs come in the same two tensors: side a's ids, a separator id, side b's ids
(runtime.py). A teacher derives its segment ids from its tokenizer's separator; a pair
student splits the row at `<sep>` (`split_pair_ids`) and either encodes both sides with one
shared encoder and classifies [u, v, u*v, |u - v|] (`SiameseStudent`, Tang et al. 2019) or
lets the words of each side attend to the other's (`DecomposableAttention`).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import CRITERIA, STUDENT_KINDS, CNNConfig, Config, DenseNetConfig, DSAConfig, check_student_data
from runtime import prune_buckets


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """`[batch, width]` bool, True on real tokens."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def split_pair_ids(ids: torch.Tensor, lengths: torch.Tensor, sep_id: int, pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of pairs, ids `[B, T]` = side a, `sep_id`, side b, padding, as two batches:
    (ids_a `[B, T]`, lengths_a `[B]`, ids_b `[B, T]`, lengths_b `[B]`), each side from
    position 0 with padding after it. Both keep the width T (no data-dependent shapes, so the
    graph exports to ONNX); a row without `sep_id` is all side a, and side b is empty."""
    width = ids.size(1)
    t = torch.arange(width, device=ids.device)[None, :]  # [1, T]
    is_sep = (ids == sep_id) & (t < lengths[:, None])  # [B, T]
    # the first separator's position (argmax returns the first maximum), else the length
    first = is_sep.to(torch.float32).argmax(dim=1)  # [B]
    len_a = torch.where(is_sep.any(dim=1), first, lengths)  # [B]
    len_b = (lengths - len_a - 1).clamp(min=0)  # [B]
    pad = torch.full_like(ids, pad_id)
    ids_a = torch.where(t < len_a[:, None], ids, pad)  # [B, T]
    shifted = ids.gather(1, (t + len_a[:, None] + 1).clamp(max=width - 1))  # [B, T]: side b from position 0
    ids_b = torch.where(t < len_b[:, None], shifted, pad)  # [B, T]
    return ids_a, len_a, ids_b, len_b


def segment_ids(ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """BERT's segment (token type) ids `[B, T]` of `[CLS] a [SEP] b [SEP]`: 0 up to and with the
    first separator, 1 after it (a single sentence is all 0, as the tokenizer would give)."""
    is_sep = (ids == sep_id).long()  # [B, T]
    return (is_sep.cumsum(dim=1) - is_sep).clamp(max=1)


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

class MaskedTextCNN(nn.Module):
    """Convolutions of several widths over `[batch, seq, in_dim]`, ReLU, max over time.

    Only windows inside the sentence are pooled (a window that reaches into padding is
    excluded), and sentences shorter than the widest kernel are zero-padded up to it,
    so a sentence's output does not depend on the batch it is in.
    """

    def __init__(self, in_dim: int, cfg: CNNConfig):
        super().__init__()
        self.kernel_sizes = list(cfg.kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, cfg.num_filters, k) for k in self.kernel_sizes)
        self.out_dim = cfg.num_filters * len(self.kernel_sizes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C], zero on padding
        # Append max_k - 1 zero steps once (no data-dependent branch, so the graph exports
        # to ONNX with a dynamic length), then give each width only the windows a sentence
        # of T tokens has, max(T - k + 1, 1): a quarter fewer multiply-adds than convolving
        # the padded input, which is most of the CNN's time at batch 1.
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
    """The seed's 1-D DenseNet over token vectors.

    `kernel_sizes` is a grid: row i is depth i, column j is branch j. In branch j, the conv at
    depth 0 maps the embeddings to `first_num_filters` channels, and the conv at depth i > 0
    sees the concatenation of the branch's outputs at depths 0..i-1 (first + (i - 1) * growth
    channels) and outputs `num_filters`. A final 1x1 conv (ReLU) maps the embeddings plus each
    branch's last output to `last_num_filters`. 'Same' padding keeps one output per token, and
    padding positions are zeroed after every convolution, so they look like the zero padding
    a lone sentence gets at its end."""

    def __init__(self, in_dim: int, cfg: DenseNetConfig, activation: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.activation = activation
        depth, width = len(cfg.kernel_sizes), len(cfg.kernel_sizes[0])
        branches = []
        for j in range(width):
            convs = []
            for i in range(depth):
                channels_in = in_dim if i == 0 else cfg.first_num_filters + cfg.num_filters * (i - 1)
                channels_out = cfg.first_num_filters if i == 0 else cfg.num_filters
                convs.append(nn.Conv1d(channels_in, channels_out, cfg.kernel_sizes[i][j], padding="same"))
            branches.append(nn.ModuleList(convs))
        self.branches = nn.ModuleList(branches)
        self.last = nn.Conv1d(in_dim + cfg.num_filters * width, cfg.last_num_filters, 1)
        self.out_dim = cfg.last_num_filters

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C] (zero on padding); mask: [B, T] bool
        m = mask[:, None, :].to(x.dtype)  # [B, 1, T]
        x = x.transpose(1, 2)  # [B, C, T]
        last_outputs = []
        for convs in self.branches:
            outputs: list[torch.Tensor] = []
            for i, conv in enumerate(convs):
                h = x if i == 0 else torch.cat(outputs, dim=1)  # [B, first + (i - 1) * growth, T]
                outputs.append(self.activation(conv(h)) * m)  # [B, first or growth, T]
            last_outputs.append(outputs[-1])
        out = F.relu(self.last(torch.cat([x, *last_outputs], dim=1))) * m  # [B, last, T]
        return out.transpose(1, 2)  # [B, T, last]


class DynamicSelfAttention(nn.Module):
    """Dynamic Self-Attention (Yoon, Lee, Lee 2018): per head, project words
    (linear + leaky ReLU), then `r` routing iterations: a = softmax(q) over the real words,
    s = sum_i a_i x_i, z = tanh(s), q_i += x_i . z. Output: the heads' last z, concatenated.
    As in the seed, no gradient flows through the routing logits q (only through s)."""

    def __init__(self, in_dim: int, cfg: DSAConfig):
        super().__init__()
        self.heads, self.dim, self.iterations = cfg.num_attentions, cfg.dsa_dim, cfg.r
        # one matrix for all heads: the same parameters as the seed's one Linear per head
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
            a = torch.softmax(q.detach().masked_fill(pad, float("-inf")), dim=1)  # [B, T, H]
            s = torch.einsum("bth,bthd->bhd", a, words)  # [B, H, D]
            z = torch.tanh(s)
            if it + 1 < self.iterations:
                q = q + torch.einsum("bthd,bhd->bth", words, z)
        return z.reshape(b, self.heads * self.dim)  # [B, H * D]


class NormHead(nn.Module):
    """The seed's students' output stage: LayerNorm → dropout over the encoder's vector, then
    [linear → LayerNorm → dropout] when `hidden` > 0 (no activation, as in the seed), then
    the output linear layer."""

    def __init__(self, in_dim: int, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(in_dim), nn.Dropout(dropout)]
        if hidden > 0:
            layers += [nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.Dropout(dropout)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ReluHead(nn.Module):
    """Tang et al.'s output stage: dropout → [linear → ReLU → dropout] → linear; the hidden
    layer is skipped when `hidden` is 0."""

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
    """Common part of the students: a GloVe embedding table (`<pad>` row kept at zero) with
    dropout on its output."""

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
    """The seed's GloVe CNN: GloVe → TextCNN (max over time) → LayerNorm → fc → LayerNorm → logits.
    With `num_labels` 0 it is the encoder alone (`encode`: the TextCNN's vector, `out_dim`)."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        self.cnn = MaskedTextCNN(config.token_emb_dim, config.cnn)
        self.out_dim = self.cnn.out_dim
        self.head = NormHead(self.cnn.out_dim, config.fc_hidden_size, num_labels, config.dropout) if num_labels \
            else None

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, _ = self.embed(ids, lengths)  # [B, T, E]
        return self.cnn(x, lengths)  # [B, out_dim]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(ids, lengths))  # [B, K]


class DenseNetCNN(GloveStudent):
    """The seed's DenseNet-CNN: GloVe → DenseNet (ReLU) → LayerNorm → dropout → TextCNN →
    LayerNorm → dropout → logits."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        self.densenet = DenseNet1d(config.token_emb_dim, config.densenet, F.relu)
        self.densenet_norm = nn.LayerNorm(self.densenet.out_dim)
        self.cnn = MaskedTextCNN(self.densenet.out_dim, config.cnn)
        self.head = NormHead(self.cnn.out_dim, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(ids, lengths)  # [B, T, E]
        h = normalize_tokens(self.densenet(x, mask), self.densenet_norm, mask, self.emb_dropout)  # [B, T, last]
        return self.head(self.cnn(h, lengths))  # [B, K]


class DenseNetDSA(GloveStudent):
    """The seed's DenseNet-DSA: GloVe → DenseNet (leaky ReLU) → LayerNorm → dropout → Dynamic
    Self-Attention → LayerNorm → dropout → fc → LayerNorm → dropout → logits."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        self.densenet = DenseNet1d(config.token_emb_dim, config.densenet, F.leaky_relu)
        self.densenet_norm = nn.LayerNorm(self.densenet.out_dim)
        self.dsa = DynamicSelfAttention(self.densenet.out_dim, config.dsa)
        self.head = NormHead(self.dsa.out_dim, config.fc_hidden_size, num_labels, config.dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(ids, lengths)  # [B, T, E]
        h = normalize_tokens(self.densenet(x, mask), self.densenet_norm, mask, self.emb_dropout)  # [B, T, last]
        return self.head(self.dsa(h, mask))  # [B, K]


def normalize_tokens(h: torch.Tensor, norm: nn.LayerNorm, mask: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
    """LayerNorm then dropout per token of `[B, T, C]`, padding put back to zero (LayerNorm
    maps a zero vector to its bias, which the pooling after it must not see)."""
    return dropout(norm(h)) * mask[:, :, None].to(h.dtype)


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

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size)
        lstm = config.lstm
        sizes = [config.token_emb_dim] + [2 * lstm.hidden_size] * (lstm.num_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(n, lstm.hidden_size, batch_first=True) for n in sizes)
        self.backward_lstms = nn.ModuleList(nn.LSTM(n, lstm.hidden_size, batch_first=True) for n in sizes)
        self.out_dim = 2 * lstm.hidden_size
        self.head = ReluHead(self.out_dim, config.fc_hidden_size, num_labels, config.dropout) if num_labels else None

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(ids, lengths))  # [B, K]

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The sentence vector `[B, 2H]`."""
        x, _ = self.embed(ids, lengths)  # [B, T, E]
        lengths = lengths.clamp(min=1)
        for fwd, bwd in zip(self.forward_lstms, self.backward_lstms):
            out_f, _ = fwd(x)  # [B, T, H]
            out_b = reverse_within_length(bwd(reverse_within_length(x, lengths))[0], lengths)  # [B, T, H]
            x = torch.cat([out_f, out_b], dim=2)  # [B, T, 2H]: the next layer's input
        last = (lengths - 1)[:, None, None].expand(-1, 1, out_f.size(2))  # [B, 1, H]
        # the forward state at the last token, and the backward state after reading back to the first
        return torch.cat([out_f.gather(1, last)[:, 0], out_b[:, 0]], dim=1)  # [B, 2H]


class GloveBow(GloveStudent):
    """A bag of n-grams: the mean of the sentence's feature vectors, its words' (from GloVe)
    and its hashed n-grams' (`runtime.WordIds` makes the feature ids: words, then n-grams,
    in one table), then with `bow.hidden` the ReLU layers of a deep averaging network (Iyyer
    et al. 2015), then the output layer. Without hidden layers it is fastText's model, linear
    in its features, and the numpy runtime folds the output layer into the table. With
    `num_labels` 0 it has no output layer (`encode`: the mean, through the hidden layers)."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int):
        super().__init__(config, vocab_size + config.bow.buckets)
        # n-gram rows start at zero (a row no training sentence reaches stays exactly zero, so a
        # deployment stores only the rows in use); words get GloVe (init_embeddings)
        with torch.no_grad():
            self.embedding.weight[vocab_size:].zero_()
            if config.bow.word_init == "uniform":  # fastText's input rows (the n-gram rows stay zero, see above)
                bound = 1.0 / config.token_emb_dim
                self.embedding.weight[:vocab_size].uniform_(-bound, bound)
                self.embedding.weight[config.pad_token_id].zero_()
        layers: list[nn.Module] = []
        width = config.token_emb_dim
        for hidden in config.bow.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        self.out_dim = width
        if num_labels:
            layers.append(nn.Linear(width, num_labels))
            if config.bow.zero_output:  # fastText's output rows start at zero
                nn.init.zeros_(layers[-1].weight)
                nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(ids, lengths)  # [B, T, E], zero on padding
        mean = x.sum(1) / mask.sum(1).clamp(min=1)[:, None].to(x.dtype)  # [B, E]
        return self.mlp(mean)  # [B, K]

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`forward` without an output layer (built with `num_labels` 0): `[B, out_dim]`."""
        return self.forward(ids, lengths)

    def without_unused_buckets(self) -> tuple["GloveBow", np.ndarray]:
        """A copy for deployment with the table `runtime.prune_buckets` makes (only the n-gram
        rows training reached, and one zero row for the rest): the same logits. Returns (the
        copy, the kept buckets `[k]` int64, ascending); feature ids for the copy come from
        `runtime.WordIds.pruned` given those buckets."""
        weight = self.embedding.weight.detach()  # [V + buckets, E]
        rows, kept = prune_buckets(weight.cpu().numpy(), weight.size(0) - self.config.bow.buckets)  # [V + k + 1, E]
        table = nn.Embedding(rows.shape[0], rows.shape[1], padding_idx=self.embedding.padding_idx,
                             _weight=torch.from_numpy(rows).to(weight.device), _freeze=True)
        # the copy takes the new table in place of the old one, which is never copied
        return copy.deepcopy(self, memo={id(self.embedding): table}), kept


class SiameseStudent(nn.Module):
    """A pair student after Tang et al. 2019: one encoder (a CNN, BiLSTM or bag of n-grams
    built without its output layer) maps each side to a vector, u and v; then
    [u, v, u*v, |u - v|] → ReLU layer → logits."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int, sep_id: int):
        super().__init__()
        self.config, self.sep_id = config, sep_id
        self.encoder = STUDENTS[config.enc_class](config, vocab_size, 0)
        hidden = config.fc_hidden_size
        self.head = ReluHead(4 * self.encoder.out_dim, hidden, num_labels, config.dropout)

    @property
    def embedding(self) -> nn.Embedding:
        return self.encoder.embedding

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids_a, len_a, ids_b, len_b = split_pair_ids(ids, lengths, self.sep_id, self.config.pad_token_id)
        # both sides in one encoder call: [2B, T] -> [2B, D]
        both = self.encoder.encode(torch.cat([ids_a, ids_b]), torch.cat([len_a, len_b]))
        u, v = both.chunk(2)  # [B, D] each
        return self.head(torch.cat([u, v, u * v, (u - v).abs()], dim=1))  # [B, K]

    def without_unused_buckets(self) -> tuple["SiameseStudent", np.ndarray]:
        """A bag-of-n-grams encoder's `GloveBow.without_unused_buckets`, for the whole pair student."""
        encoder, kept = self.encoder.without_unused_buckets()
        return copy.deepcopy(self, memo={id(self.encoder): encoder}), kept


def feed_forward(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Parikh et al.'s F, G and H: two ReLU layers of `hidden` units, dropout before each."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())


class DecomposableAttention(GloveStudent):
    """Decomposable attention (Parikh et al. 2016), for pairs: GloVe → a linear projection;
    attend: e_ij = F(a_i)·F(b_j), each word of one side soft-aligned to the other side's
    words; compare: G([a_i, β_i]) and G([b_j, α_j]); aggregate: the sums over each side,
    concatenated → H → logits. It sees which word of one side matches or contradicts which
    of the other, which a siamese encoder's two sentence vectors cannot."""

    def __init__(self, config: Config, vocab_size: int, num_labels: int, sep_id: int):
        super().__init__(config, vocab_size)
        hidden = config.decomp.hidden
        self.sep_id = sep_id
        self.project = nn.Linear(config.token_emb_dim, hidden, bias=False)
        self.attend = feed_forward(hidden, hidden, config.dropout)
        self.compare = feed_forward(2 * hidden, hidden, config.dropout)
        self.aggregate = feed_forward(2 * hidden, hidden, config.dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids_a, len_a, ids_b, len_b = split_pair_ids(ids, lengths, self.sep_id, self.config.pad_token_id)
        a, mask_a = self.embed(ids_a, len_a)  # [B, T, E], [B, T]
        b, mask_b = self.embed(ids_b, len_b)
        a, b = self.project(a), self.project(b)  # [B, T, H]
        scores = self.attend(a) @ self.attend(b).transpose(1, 2)  # [B, Ta, Tb]
        # a large negative, not -inf: padding rows of the score matrix stay finite
        beta = F.softmax(scores.masked_fill(~mask_b[:, None, :], -1e4), dim=2) @ b  # [B, Ta, H]: b aligned to a_i
        alpha = F.softmax(scores.masked_fill(~mask_a[:, :, None], -1e4), dim=1).transpose(1, 2) @ a  # [B, Tb, H]
        v_a = (self.compare(torch.cat([a, beta], dim=2)) * mask_a[:, :, None].to(a.dtype)).sum(1)  # [B, H]
        v_b = (self.compare(torch.cat([b, alpha], dim=2)) * mask_b[:, :, None].to(b.dtype)).sum(1)  # [B, H]
        return self.out(self.aggregate(torch.cat([v_a, v_b], dim=1)))  # [B, K]


STUDENTS: dict[str, type[GloveStudent]] = {
    "cnn": GloveCNN,
    "densenet-cnn": DenseNetCNN,
    "densenet-dsa": DenseNetDSA,
    "bilstm": GloveBiLSTM,
    "bow": GloveBow,
    "dan": GloveBow,  # the same network with `bow.hidden` layers
    "decomp-att": DecomposableAttention,
}
assert set(STUDENTS) == set(STUDENT_KINDS), "config.STUDENT_KINDS and model.STUDENTS must name the same students"


def build_student(config: Config, vocab_size: int, num_labels: int, sep_id: int | None = None
                  ) -> GloveStudent | SiameseStudent:
    """A student for `config.enc_class`, randomly initialised (copy GloVe in afterwards); with
    `sep_id` (a pair vocabulary's `<sep>`) a pair student. A student that does not take that
    kind of data is a UserError (`config.check_student_data`)."""
    if config.enc_class not in STUDENTS:
        raise ValueError(f"unknown enc_class {config.enc_class!r}; expected one of {sorted(STUDENTS)}")
    check_student_data(config.enc_class, sep_id is not None, "student")
    if sep_id is None:
        return STUDENTS[config.enc_class](config, vocab_size, num_labels)
    if config.enc_class == "decomp-att":
        return DecomposableAttention(config, vocab_size, num_labels, sep_id)
    return SiameseStudent(config, vocab_size, num_labels, sep_id)


def bag_of_ngrams(model: nn.Module) -> GloveBow | None:
    """The bag of n-grams in a student (itself, or a siamese student's encoder), else None."""
    inner = model.encoder if isinstance(model, SiameseStudent) else model
    return inner if isinstance(inner, GloveBow) else None


def init_embeddings(model: GloveStudent | SiameseStudent, matrix: torch.Tensor) -> None:
    """Copy the GloVe matrix `[vocab, dim]` into the first rows of the student's embedding
    table (a bag of n-grams' table has its n-gram rows after the words); a bag whose
    `bow.word_init` is "uniform" keeps its own word rows."""
    bow = model.config.bow
    if bow is not None and bow.word_init == "uniform":
        return
    rows, dim = model.embedding.weight.shape
    fits = matrix.shape[0] == rows or (bag_of_ngrams(model) is not None and matrix.shape[0] < rows)
    if matrix.shape[1] != dim or not fits:
        raise ValueError(f"embedding matrix shape {tuple(matrix.shape)} does not fit the model's table "
                         f"{(rows, dim)}")
    with torch.no_grad():
        model.embedding.weight[: matrix.shape[0]].copy_(matrix)


# ---------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------

class TransformerClassifier(nn.Module):
    """Any Hugging Face encoder (`AutoModel`) with dropout and a linear layer over a sentence
    vector pooled from its last hidden states: the first token's (`head="cls"`: [CLS] for
    BERT/ELECTRA, <s> for RoBERTa) or the mean over the sentence's real tokens (`"mean"`, what
    sentence-transformers backbones such as all-MiniLM-L6-v2 were trained to produce)."""

    def __init__(self, encoder_config: Any, num_labels: int, dropout: float, head: str = "cls",
                 encoder: nn.Module | None = None, sep_id: int | None = None):
        super().__init__()
        self.sep_id = sep_id  # with it, segment ids for pairs (`teachers.segment_sep_id`)
        from transformers import AutoModel

        if head not in ("cls", "mean"):
            raise ValueError(f"unknown teacher head {head!r}; expected 'cls' or 'mean' ('hf' is SequenceClassifier)")
        # `encoder` lets a caller pass pretrained weights; otherwise built from the config.
        self.encoder = encoder if encoder is not None else AutoModel.from_config(encoder_config)
        self.head = head
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.size(1))  # [B, T], True on real tokens
        segments = {} if self.sep_id is None else {"token_type_ids": segment_ids(ids, self.sep_id)}
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long(), **segments).last_hidden_state  # [B, T, H]
        if self.head == "cls":
            pooled = hidden[:, 0]  # [B, H]
        else:
            # Padding is zeroed before the sum, so a sentence pools the same alone or padded.
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, H]
        return self.classifier(self.dropout(pooled))  # [B, K]


class SequenceClassifier(nn.Module):
    """A Hugging Face `*ForSequenceClassification` model (BERT, RoBERTa, ELECTRA, DistilBERT, ...)
    with its own head, behind the toolkit's `forward(ids, lengths) -> logits` interface. Its
    logits are in its own label order (`config.id2label`)."""

    def __init__(self, hf_model: nn.Module, sep_id: int | None = None):
        super().__init__()
        self.hf = hf_model
        self.sep_id = sep_id  # with it, segment ids for pairs (`teachers.segment_sep_id`)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, ids.size(1)).long()  # [B, T], 1 on real tokens
        segments = {} if self.sep_id is None else {"token_type_ids": segment_ids(ids, self.sep_id)}
        return self.hf(input_ids=ids, attention_mask=mask, **segments).logits  # [B, K]


# ---------------------------------------------------------------------------
# Loss and sizes
# ---------------------------------------------------------------------------

def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, criterion: str, temperature: float = 1.0
) -> torch.Tensor:
    """Loss between student logits s and teacher logits t, both `[batch, K]`, averaged over the batch.

    - `MSELoss`:  mean over batch and classes of (s - t)^2  (Tang et al. 2019).
    - `KLDivLoss`: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes
      (Hinton et al. 2015; the T^2 keeps gradient sizes comparable across T).
    - `CrossEntropyLoss`: T^2 * -sum_k softmax(t/T)_k log softmax(s/T)_k, soft targets.
    - `BCEWithLogitsLoss` (multi-label: K independent yes/no labels): T^2 * the mean over batch
      and labels of the binary cross-entropy of sigmoid(s/T) against the teacher's
      probabilities sigmoid(t/T), soft targets.
    """
    if criterion == "MSELoss":
        return F.mse_loss(student_logits, teacher_logits)
    if criterion == "BCEWithLogitsLoss":
        q = torch.sigmoid(teacher_logits / temperature)  # [B, K]
        return F.binary_cross_entropy_with_logits(student_logits / temperature, q) * temperature**2
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    q = F.softmax(teacher_logits / temperature, dim=-1)
    if criterion == "KLDivLoss":
        return F.kl_div(log_p, q, reduction="batchmean") * temperature**2
    if criterion == "CrossEntropyLoss":
        return -(q * log_p).sum(dim=-1).mean() * temperature**2
    raise ValueError(f"unknown criterion {criterion!r}; expected one of {list(CRITERIA)}")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts, with and without the embedding tables (a bag of n-grams' n-gram rows
    are part of its table)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return {"parameters": total, "parameters_without_embeddings": total - embedding}
