"""Images -> connector input: patchify, SigLIP2 tower per image, pixel unshuffle (spec §4.2-§4.3).

The reference packs every image of a batch into one sequence and keeps them apart with variable-length
(flash-attn) boundaries, so each image attends only to its own patches. transformers' SigLIP2 batches
with padding instead; we run it on groups of equally sized images, which needs no padding and no mask
and is the same block-diagonal attention. The reference's 14x14 window reordering is skipped: with
windows and RoPE off it is a pure permutation of an attention-equivariant computation (spec §4.2).
The pooling head is never run. Image shapes stay on the host: the position table is resized once per image
size (and kept while its weights are unchanged), where transformers' embeddings read per-image shapes back
from the device.
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


def resized_position_embeddings(embeddings: nn.Module, n: int, h: int, w: int) -> torch.Tensor:
    """The learned position grid resized to (h, w) patches for n images: (h*w, D) or (n, h*w, D), the math of
    transformers' `Siglip2VisionEmbeddings.resize_positional_embeddings` (bilinear with antialias, float32 on
    CPU) for a host-side size. A frozen table's result is cached per size while its storage and version stay;
    a trained one is resized once per image, as transformers does, so its gradient sums in the same order."""
    table = embeddings.position_embedding.weight
    grid = embeddings.position_embedding_size
    if table.requires_grad:
        return torch.stack([_resize_positions(table, grid, h, w) for _ in range(n)])
    key = (h, w, table.data_ptr(), table._version, table.dtype, table.device)
    cache: dict = embeddings.__dict__.setdefault("_svms_position_cache", {})
    if key not in cache:
        if len(cache) >= 8:
            cache.clear()
        cache[key] = _resize_positions(table, grid, h, w)
    return cache[key]


def _resize_positions(table: torch.Tensor, grid: int, h: int, w: int) -> torch.Tensor:
    dtype = table.dtype
    x = table.reshape(grid, grid, -1).permute(2, 0, 1).unsqueeze(0)  # (1, D, grid, grid)
    if x.device.type == "cpu":  # antialias has no bf16/fp16 kernel on CPU
        x = x.to(torch.float32)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.reshape(x.shape[1], h * w).transpose(0, 1).to(dtype)


def encode_groups(vision_model: Siglip2VisionModel, images: list[torch.Tensor], multiple: int
                  ) -> tuple[int, list[tuple[list[int], torch.Tensor, int, int]]]:
    """Post-LayerNorm ViT output per group of equally sized images: (number of images,
    [(their list positions, tokens (n, h*w, D), h, w), ...]). Shapes are read on the host.

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
    groups = []
    for (height, width), indices in by_size.items():
        h, w = height // patch, width // patch
        stacked = flat[indices[0]][None] if len(indices) == 1 else torch.stack([flat[i] for i in indices])
        patches = patchify(stacked.to(dtype), patch)  # (n, h*w, p*p*C)
        embeddings = tower.embeddings
        x = embeddings.patch_embedding(patches) + resized_position_embeddings(embeddings, len(indices), h, w)
        x = tower.encoder(inputs_embeds=x, attention_mask=None).last_hidden_state
        groups.append((indices, tower.post_layernorm(x), h, w))
    return len(flat), groups


def images_to_tokens(vision_model: Siglip2VisionModel, mlp1: nn.Sequential, images: list[torch.Tensor],
                     factor: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Connector tokens of all images concatenated in list order (N_tok, D_llm), and the ViT output
    of each image (h*w, D_vit), which the reference reports packed as an intermediate. Unshuffled once per
    image size."""
    patch = vision_model.vision_model.config.patch_size
    n_images, groups = encode_groups(vision_model, images, patch * factor)
    states: list[torch.Tensor | None] = [None] * n_images
    per_image: list[torch.Tensor | None] = [None] * n_images
    for indices, x, h, w in groups:
        unshuffled = pixel_unshuffle_tokens(x, h, w, factor)  # (n, h*w/r², D*r²)
        for row, i in enumerate(indices):
            states[i], per_image[i] = x[row], unshuffled[row]
    # One size: the group is already in list order.
    tokens = unshuffled.flatten(0, 1) if len(groups) == 1 else torch.cat(per_image)  # type: ignore[arg-type]
    tokens = tokens.to(mlp1[0].weight.dtype)  # (N_tok, D_vit*r*r)
    return mlp1(tokens), states  # type: ignore[return-value]
