"""Images -> connector input: patchify, SigLIP2 tower per image, pixel unshuffle (spec §4.2-§4.3).

The reference packs every image of a batch into one sequence and keeps them apart with variable-length
(flash-attn) boundaries, so each image attends only to its own patches. transformers' SigLIP2 batches
with padding instead; we run it on groups of equally sized images, which needs no padding and no mask
and is the same block-diagonal attention. The reference's 14x14 window reordering is skipped: with
windows and RoPE off it is a pure permutation of an attention-equivariant computation (spec §4.2).
The pooling head is never run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Siglip2VisionModel

from svms.errors import SvmsError


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, C, H, W) -> (n, H/p * W/p, p*p*C): patches row-major, each flattened (row, col, channel)."""
    n, c, height, width = images.shape
    h, w = height // patch, width // patch
    x = images.reshape(n, c, h, patch, w, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, h * w, patch * patch * c)


def pixel_unshuffle_tokens(tokens: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(n, h*w, D) raster tokens -> (n, h/r * w/r, D*r*r); channel c*r*r + dy*r + dx is (2y+dy, 2x+dx)."""
    n, _, dim = tokens.shape
    grid = tokens.transpose(1, 2).reshape(n, dim, h, w)
    return F.pixel_unshuffle(grid, factor).flatten(2).transpose(1, 2)


def as_image_list(pixel_values: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...] | None
                  ) -> list[torch.Tensor]:
    """The reference takes a list of (n_i, C, H_i, W_i) tensors; a single (N, C, H, W) tensor is one entry."""
    if pixel_values is None:
        return []
    if isinstance(pixel_values, torch.Tensor):
        pixel_values = [pixel_values]
    for i, images in enumerate(pixel_values):
        if images.dim() != 4:
            raise SvmsError(f"pixel_values[{i}] has shape {tuple(images.shape)}; expected (n, 3, H, W)")
    return list(pixel_values)


def encode_images(vision_model: Siglip2VisionModel, images: list[torch.Tensor], multiple: int
                  ) -> list[tuple[torch.Tensor, int, int]]:
    """Post-LayerNorm ViT output per image, in list order: [(tokens (h*w, D), h, w), ...].

    `multiple` is patch size x unshuffle factor: image sides must be multiples of it.
    """
    tower = vision_model.vision_model
    patch = tower.config.patch_size
    flat = [img for batch in images for img in batch]  # (C, H, W) each, in reference order
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, img in enumerate(flat):
        height, width = img.shape[-2:]
        if height % multiple or width % multiple:
            raise SvmsError(f"image {index} is {height}x{width}; both sides must be multiples of {multiple} "
                            "(the Eagle processor resizes images to such sizes, spec §5.2)")
        by_size.setdefault((height, width), []).append(index)
    dtype = tower.embeddings.patch_embedding.weight.dtype
    out: list[tuple[torch.Tensor, int, int] | None] = [None] * len(flat)
    for (height, width), indices in by_size.items():
        h, w = height // patch, width // patch
        patches = patchify(torch.stack([flat[i] for i in indices]).to(dtype), patch)  # (n, h*w, p*p*C)
        shapes = torch.tensor([[h, w]] * len(indices), device=patches.device)
        x = tower.embeddings(patches, shapes)  # (n, h*w, D)
        x = tower.encoder(inputs_embeds=x, attention_mask=None).last_hidden_state
        x = tower.post_layernorm(x)
        for row, i in enumerate(indices):
            out[i] = (x[row], h, w)
    return out  # type: ignore[return-value]


def images_to_tokens(vision_model: Siglip2VisionModel, mlp1: nn.Sequential, images: list[torch.Tensor],
                     factor: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Connector tokens of all images concatenated in list order (N_tok, D_llm), and the ViT output
    of each image (h*w, D_vit), which the reference reports packed as an intermediate."""
    patch = vision_model.vision_model.config.patch_size
    encoded = encode_images(vision_model, images, patch * factor)
    unshuffled = [pixel_unshuffle_tokens(x[None], h, w, factor)[0] for x, h, w in encoded]
    tokens = torch.cat(unshuffled).to(mlp1[0].weight.dtype)  # (N_tok, D_vit*r*r)
    return mlp1(tokens), [x for x, _, _ in encoded]
