"""The upstream: transformers' ``WhisperEncoder`` on Whisper's log-mel input, every layer's state named.

States, in order (``layer_names``): ``embed`` (the input of the first block: two GELU convolutions plus the
sinusoidal positions), ``block1`` .. ``blockN`` (each block's output), ``ln_post`` (the final layer norm: what
Whisper's decoder reads, and what CTranslate2's ``encode`` returns). 20 ms frames (``get_downsample_rates`` = 320),
cropped to the longest input of the batch: an input of ``L`` samples has ``(L // 160 + 1) // 2`` frames.

``pad_to_30s``:

- ``true`` (default): Whisper's own input. Every utterance is zero-padded to 30 s before the log-mel (as Whisper
  is trained and run), the encoder sees 3000 mel frames, and the states are cropped afterwards. Inputs longer than
  30 s are refused.
- ``false``: a deviation from Whisper, faster on short inputs: utterances are padded to the longest of the batch
  only, and the positional embeddings are cropped to that length (the first ``T`` of the 1500 positions). Attention
  then sees no 30 s of padding, so the states differ from Whisper's, more with depth. Measured with tiny.en on
  real speech (3-14 s, relative L2 difference from ``true``): ``embed`` 0.2-2 %, ``block1`` 2-7 %, ``block3``
  7-20 %, ``block4`` 44-56 %, ``ln_post`` 11-37 %; 2.5-10x faster on a CPU. Use it for speed, not for Whisper's
  numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from whisper_upstream.errors import WhisperUpstreamError

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
DOWNSAMPLE = 2 * HOP  # conv2 has stride 2: 20 ms per encoder frame


def frames_for(samples: int) -> int:
    """Encoder frames of an input of ``samples`` samples (Whisper drops the STFT's last frame; conv2 halves)."""
    return (samples // HOP + 1) // 2


@contextmanager
def _positions_cropped(encoder: WhisperEncoder, frames: int) -> Iterator[None]:
    """Run ``encoder`` on ``2 * frames`` mel frames: its first ``frames`` positional embeddings only."""
    full, full_count = encoder.embed_positions, encoder.config.max_source_positions
    encoder.embed_positions = nn.Embedding.from_pretrained(full.weight[:frames], freeze=True)
    encoder.config.max_source_positions = frames
    try:
        yield
    finally:
        encoder.embed_positions, encoder.config.max_source_positions = full, full_count


class WhisperEncoderUpstream(nn.Module):
    """An s3prl upstream around transformers' ``WhisperEncoder``.

    Args:
        encoder: the encoder, with its weights loaded.
        pad_to_30s: Whisper's own 30 s input (True) or cropped positions (False, faster; see the module docstring).
        source: where the weights came from (a path, a model id, or ``random-init seed N``), for reports.
    """

    def __init__(self, encoder: WhisperEncoder, pad_to_30s: bool = True, source: str = "") -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.pad_to_30s = pad_to_30s
        self.source = source
        config = encoder.config
        self.feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE)
        self.max_samples = config.max_source_positions * DOWNSAMPLE
        self.layer_names = ["embed", *(f"block{i + 1}" for i in range(config.encoder_layers)), "ln_post"]

    def get_downsample_rates(self, key: str) -> int:
        return DOWNSAMPLE

    def log_mel(self, wavs: list[torch.Tensor], samples: int) -> torch.Tensor:
        """Whisper's log-mel features ``[B, n_mels, samples // 160]``, each utterance zero-padded to ``samples``."""
        arrays = [wav.detach().float().cpu().numpy() for wav in wavs]
        features = self.feature_extractor(
            arrays, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=samples, return_tensors="pt"
        ).input_features
        return features.to(device=wavs[0].device, dtype=next(self.encoder.parameters()).dtype)

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        longest = max(len(wav) for wav in wavs)
        if longest > self.max_samples:
            raise WhisperUpstreamError(
                f"an input of {longest / SAMPLE_RATE:.1f} s is longer than Whisper's {self.max_samples / SAMPLE_RATE:.0f} s "
                "window; cut the audio into segments of at most 30 s"
            )
        frames = frames_for(longest)
        if self.pad_to_30s:
            features = self.log_mel(wavs, self.max_samples)
        else:
            features = self.log_mel(wavs, frames * DOWNSAMPLE)
        blocks: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: blocks.append(out)) for layer in self.encoder.layers]
        try:
            if self.pad_to_30s:
                output = self.encoder(features, output_hidden_states=True)
            else:
                with _positions_cropped(self.encoder, frames):
                    output = self.encoder(features, output_hidden_states=True)
        finally:
            for hook in hooks:
                hook.remove()
        states = [output.hidden_states[0], *blocks, output.last_hidden_state]
        hidden_states = [state[:, :frames].float() for state in states]
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}
