"""GC ViT checkpoint layouts: official NVlabs (`levels.*`) <-> lgvit, which is timm's `gcvit_*` layout.

Official -> lgvit: `levels.i.downsample` is the reducer at the *end* of level i, which lgvit
(and timm) place at the *start* of stage i+1; the global-query generator's FeatExtracts become
`global_block.blocks.conv{j+1}`; SE Linear weights become 1x1 convs; `gamma1/2` become
`ls1/ls2.gamma`; the final `norm` is the last stage's norm; `head` is `head.fc`; the persistent
`relative_position_index` buffers are dropped (lgvit rebuilds them).
"""

from .common import (
    CheckpointError,
    StateDict,
    add_relative_position_index,
    conv_to_linear,
    linear_to_conv,
    rename,
    stage_count,
)

_SE = r"se\.fc[12]\.weight$"


class GCViTConverter:
    """The `Converter` of GC ViT: 'official' (NVlabs) or 'lgvit' (also timm's layout)."""

    def detect(self, sd: StateDict) -> str:
        if any(k.startswith("levels.") for k in sd) and "patch_embed.proj.weight" in sd:
            return "official"
        if any(k.startswith("stages.") for k in sd) and "stem.conv1.weight" in sd:
            return "lgvit"
        raise CheckpointError(f"not a GC ViT checkpoint (first keys: {list(sd)[:5]})")

    def to_lgvit(self, sd: StateDict, fmt: str) -> StateDict:
        if fmt == "lgvit":
            return rename(sd, [], drop=("relative_position_index",))
        last = stage_count(sd, "levels.") - 1
        rules = [
            (r"^patch_embed\.proj\.", "stem.conv1."),
            (r"^patch_embed\.conv_down\.", "stem.down."),
            (r"^levels\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
            (
                r"^levels\.(\d+)\.q_global_gen\.to_q_global\.(\d+)\.",
                lambda m: f"stages.{m.group(1)}.global_block.blocks.conv{int(m.group(2)) + 1}.",
            ),
            (r"^levels\.", "stages."),
            (r"(down|downsample)\.conv\.", r"\1.conv_block.conv."),
            (r"\bconv\.0\.", "conv_dw."),
            (r"\bconv\.2\.fc\.0\.", "se.fc1."),
            (r"\bconv\.2\.fc\.2\.", "se.fc2."),
            (r"\bconv\.3\.", "conv_pw."),
            (r"attn\.relative_position_bias_table", "attn.rel_pos.relative_position_bias_table"),
            (r"\.gamma([12])$", r".ls\1.gamma"),
            (r"^norm\.", f"stages.{last}.norm."),
            (r"^head\.", "head.fc."),
        ]
        return linear_to_conv(rename(sd, rules, drop=("relative_position_index",)), _SE)

    def to_official(self, sd: StateDict) -> StateDict:
        """The NVlabs layout of an lgvit state dict, `relative_position_index` buffers included."""
        last = stage_count(sd, "stages.") - 1
        rules = [
            (r"^stem\.conv1\.", "patch_embed.proj."),
            (r"^stem\.down\.", "patch_embed.conv_down."),
            (r"^stages\.(\d+)\.downsample\.", lambda m: f"levels.{int(m.group(1)) - 1}.downsample."),
            (
                r"^stages\.(\d+)\.global_block\.blocks\.conv(\d+)\.",
                lambda m: f"levels.{m.group(1)}.q_global_gen.to_q_global.{int(m.group(2)) - 1}.",
            ),
            (rf"^stages\.{last}\.norm\.", "norm."),
            (r"^stages\.", "levels."),
            (r"(conv_block\.)?conv_dw\.", "conv.0."),
            (r"(conv_block\.)?se\.fc1\.", "conv.2.fc.0."),
            (r"(conv_block\.)?se\.fc2\.", "conv.2.fc.2."),
            (r"(conv_block\.)?conv_pw\.", "conv.3."),
            (r"attn\.rel_pos\.relative_position_bias_table", "attn.relative_position_bias_table"),
            (r"\.ls([12])\.gamma$", r".gamma\1"),
            (r"^head\.fc\.", "head."),
        ]
        return add_relative_position_index(conv_to_linear(rename(sd, rules), r"conv\.2\.fc\.[02]\.weight$"))


CONVERTER = GCViTConverter()
