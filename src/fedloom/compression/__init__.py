"""Update compression: client-to-server adapter updates encoded before sending, decoded on the
server, on both engines. ``federation.compression: none | fp16 | int8 | topk``.

| codec | what travels (per adapter tensor)                               | bytes vs fp32 |
|-------|-----------------------------------------------------------------|---------------|
| none  | the adapter itself (fp32)                                       | 1             |
| fp16  | the update Δ = θ_i − x in fp16                                  | 1/2           |
| int8  | Δ quantised to int8 per row (absmax / 127) + one fp32 scale/row | ~1/4          |
| topk  | the k = ⌈ρ·n⌉ largest |Δ + e| entries (int32 index + fp32 value); error feedback: the client keeps e ← (Δ + e) − sent and adds it next time | 2ρ |

Every codec but ``none`` sends the *update* Δ relative to the adapter the client received; the
server adds the decoded Δ to that adapter.
"""

from fedloom.compression.codecs import CODECS, Codec, get_codec

__all__ = ["CODECS", "Codec", "get_codec"]
