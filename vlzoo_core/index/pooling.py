"""Token pooling: fewer stored vectors per page, by hierarchical (Ward) clustering of its token vectors.

Each page's n valid vectors are cut into k = max(n // pool_factor, 1) clusters, and each cluster is
stored as its mean vector, L2-normalised, as colpali-engine's HierarchicalTokenPooler does (97.8% of
nDCG at pool factor 3 in its report). The clusters are the ones of its
`fcluster(linkage(1 - X @ X.T, method="ward"), k, "maxclust")`: scipy takes the rows of that matrix as
observations, so the Ward distances are between similarity profiles. For two token sets with centroids
μa, μb (in the vectors' own space) that is

    d(a, b) = na * nb / (na + nb) * (μa - μb)^T G (μa - μb),   G = X^T X  (D x D, one per page),

which needs no n x n features. Pages are processed as one batch, without a per-page loop:

1. Rounds of reciprocal-nearest-neighbour merges. Every round computes the Ward distances of each
   page's active clusters with one batched matmul, takes each cluster's nearest neighbour, and merges
   every reciprocal pair at once. Ward is a reducible linkage, so merging reciprocal nearest neighbours
   in any order builds exactly the sequential algorithm's dendrogram (ties aside), and a merge never
   makes a cheaper pair appear: every later merge costs at least the current smallest distance.
   Active clusters are packed to the front after each round, so rounds shrink as clusters merge. Equal
   costs (duplicate tokens) are ordered by a fixed symmetric hash of the two slots: with the first index
   winning every tie, a page of duplicates would merge one pair per round.
2. The cut. fcluster's k clusters are the dendrogram's n - k cheapest merges, which are not the first
   n - k merges of the rounds (a round merges cheap and dear pairs alike). So every merge is logged
   with its height, and a page stops once n - k logged merges cost no more than its current smallest
   distance: no later merge can be cheaper. Its n - k cheapest logged merges (ties to the earlier round,
   so a merge always comes after the merges that built its two clusters) are then applied as edges
   between each cluster's first token, and the clusters are read off by pointer jumping.

Clusters come out in the order of their first token, so a page's result does not depend on the other
pages in the batch nor on its padding (to float rounding). Costs come from the expansion
|a|^2 + |b|^2 - 2ab in float32, so merges between near-identical tokens (costs within ~1e-6 of the page's
spread) are ordered by rounding: the clusters among such tokens may differ from scipy's, by that noise.
Memory: a few (B, L, L) float32 matrices, about 70 MB each for 32 pages of 729 tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_tokens(vectors: torch.Tensor, mask: torch.Tensor, pool_factor: int) -> list[torch.Tensor]:
    """Per page, its pooled unit vectors (n_i, D), n_i = max(valid_i // pool_factor, 1). pool_factor 1 returns each page's valid vectors unchanged (bit-identical).

    `vectors` (B, L, D) of any float dtype, `mask` (B, L) bool marking the valid tokens. Work is done and
    results returned in float32; a page with no valid token gives a (0, D) tensor.
    """
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be positive, got {pool_factor}")
    if vectors.dim() != 3 or mask.shape != vectors.shape[:2]:
        raise ValueError(f"expected vectors (B, L, D) and mask (B, L), got {tuple(vectors.shape)} and "
                         f"{tuple(mask.shape)}")
    mask = mask.bool()
    counts = mask.sum(dim=1)
    valid = vectors[mask].float()  # (T, D), page after page
    if pool_factor == 1:
        return list(valid.split(counts.tolist()))
    if not bool(torch.isfinite(valid).all()):
        raise ValueError("vectors to pool must be finite")
    width = int(counts.max()) if counts.numel() else 0
    packed_mask = torch.arange(width, device=vectors.device)[None, :] < counts[:, None]
    x = valid.new_zeros(counts.shape[0], width, valid.shape[-1])
    x[packed_mask] = valid
    targets = torch.where(counts > 0, (counts // pool_factor).clamp_min(1), 0)
    labels = _ward_labels(x, packed_mask, counts - targets)
    sums = torch.zeros_like(x).scatter_add_(1, labels[..., None].expand_as(x), x)
    sizes = torch.zeros_like(x[..., 0]).scatter_add_(1, labels, packed_mask.float())
    pooled = F.normalize(sums[sizes > 0] / sizes[sizes > 0][:, None], dim=-1)
    return list(pooled.split(targets.tolist()))


def _ward_labels(x: torch.Tensor, valid: torch.Tensor, merges: torch.Tensor) -> torch.Tensor:
    """(B, L) index of each token's cluster (its first token) after each page's `merges` cheapest Ward merges.

    `x` (B, L, D) float32 with each page's valid tokens packed first (`valid` (B, L)).
    """
    batch, length, dim = x.shape
    sizes = valid.float()
    metric = x.transpose(1, 2) @ x  # G, (B, D, D)
    # Distances are translation invariant; centring keeps the squared norms small, so less is cancelled.
    centre = x.sum(dim=1, keepdim=True) / sizes.sum(dim=1).clamp_min(1)[:, None, None]
    sums, active = x.clone(), valid.clone()
    first = torch.arange(length, device=x.device).expand(batch, length).clone()  # each cluster's first token
    level = torch.zeros_like(sizes)  # height of the merge that made each cluster (0 for a token)
    log_heights, log_parents, log_children = [], [], []
    done = merges <= 0
    while True:
        active &= ~done[:, None]
        if not bool(active.any()):
            break
        keep = torch.sort(active.to(torch.uint8), dim=1, descending=True, stable=True).indices
        keep = keep[:, : int(active.sum(dim=1).max())]
        sums = sums.gather(1, keep[..., None].expand(-1, -1, dim))
        sizes, active, first, level = (t.gather(1, keep) for t in (sizes, active, first, level))
        cost = _ward_distances(sums, sizes, active, metric, centre)
        # The two smallest costs in one pass: an equal second one is a tie (counting every equal cost would
        # convert the whole (B, W, W) comparison to integers).
        two = cost.topk(min(2, cost.shape[2]), dim=2, largest=False)
        nearest_cost, nearest = two.values[..., 0], two.indices[..., 0]
        if cost.shape[2] > 1 and bool(((two.values[..., 1] == nearest_cost) & torch.isfinite(nearest_cost)).any()):
            ties = cost == nearest_cost[..., None]
            # Equal costs (duplicate tokens) would all point at the same first index, one merge a round;
            # a symmetric pseudo-random order among them keeps the merges per round a fraction of all.
            nearest = torch.where(ties, _tie_breaks(cost.shape[1], x.device), 2).argmin(dim=2)
        # No later merge can cost less than a page's smallest distance now: a page is done once it has
        # logged enough merges that cost no more.
        smallest = nearest_cost.min(dim=1).values
        logged = sum(((h <= smallest[:, None]).sum(dim=1) for h in log_heights), torch.zeros_like(merges))
        done = logged >= merges
        slot = torch.arange(nearest.shape[1], device=x.device)[None, :]
        pair = (nearest.gather(1, nearest) == slot) & torch.isfinite(nearest_cost) & ~done[:, None]
        lower = pair & (slot < nearest)  # the surviving slot of each merged pair
        # Heights are made monotone up the tree, so a merge is never cheaper than its children's.
        height = torch.maximum(nearest_cost, torch.maximum(level, level.gather(1, nearest)))
        log_heights.append(torch.where(lower, height, torch.inf))
        log_parents.append(first)
        log_children.append(first.gather(1, nearest))
        sums = sums + torch.where(lower[..., None], sums.gather(1, nearest[..., None].expand(-1, -1, dim)), 0)
        sizes = sizes + torch.where(lower, sizes.gather(1, nearest), 0)
        level = torch.where(lower, height, level)
        active &= ~(pair & ~lower)
    return _apply_cheapest(log_heights, log_parents, log_children, merges, length)


def _tie_breaks(length: int, device: torch.device) -> torch.Tensor:
    """(L, L) symmetric pseudo-random numbers in [0, 1], a fixed hash of (min(i, j), max(i, j))."""
    index = torch.arange(length, device=device)
    low, high = torch.minimum(index[:, None], index[None, :]), torch.maximum(index[:, None], index[None, :])
    key = (low * 0x9E3779B1 + high * 0x7FEB352D) & 0xFFFFFFFF
    for shift, factor in ((15, 0x2C1B3C6D), (12, 0x297A2D39), (15, 1)):
        key = ((key ^ (key >> shift)) * factor) & 0xFFFFFFFF
    return key.double().div(2**32).float()


def _ward_distances(sums: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor, metric: torch.Tensor,
                    centre: torch.Tensor) -> torch.Tensor:
    """(B, W, W) Ward merge costs of the clusters (inf on the diagonal and for inactive clusters), exactly symmetric."""
    centroids = (sums / sizes.clamp_min(1)[..., None] - centre) * active[..., None]
    projected = centroids @ metric
    squared = (projected * centroids).sum(dim=-1).masked_fill(~active, torch.inf)
    cost = projected @ centroids.transpose(1, 2)
    cost.mul_(-2).add_(squared[:, :, None]).add_(squared[:, None, :])
    inverse = 1 / sizes.clamp_min(1)
    cost.clamp_min_(0).div_(inverse[:, :, None] + inverse[:, None, :])  # na * nb / (na + nb) = 1 / (1/na + 1/nb)
    # The matmul need not round (i, j) and (j, i) alike; reciprocity tests need exact symmetry.
    cost = torch.minimum(cost, cost.transpose(1, 2))
    cost.diagonal(dim1=1, dim2=2).fill_(torch.inf)
    return cost


def _apply_cheapest(heights: list[torch.Tensor], parents: list[torch.Tensor], children: list[torch.Tensor],
                    merges: torch.Tensor, length: int) -> torch.Tensor:
    """(B, L) cluster of each token after each page's `merges` cheapest logged merges (ties: earlier round)."""
    batch = merges.shape[0]
    device = merges.device
    root = torch.arange(length, device=device).expand(batch, length).clone()
    if not heights:
        return root
    heights, parents, children = torch.cat(heights, 1), torch.cat(parents, 1), torch.cat(children, 1)
    order = torch.sort(heights, dim=1, stable=True).indices
    chosen = torch.zeros_like(heights, dtype=torch.bool)
    rank = torch.arange(order.shape[1], device=device)[None, :]
    chosen.scatter_(1, order, rank < merges[:, None])
    chosen &= torch.isfinite(heights)
    # A cluster is absorbed once, so each token is the child of at most one merge, always under an earlier
    # token; chosen merges are written to a spare last column, the others to nowhere.
    links = torch.cat([root, root[:, :1]], dim=1)
    links.scatter_(1, torch.where(chosen, children, length), parents)
    root = links[:, :length]
    while True:
        jumped = root.gather(1, root)
        if torch.equal(jumped, root):
            return root
        root = jumped
