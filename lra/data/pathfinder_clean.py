"""Pathfinder images drawn cleanly (`style="clean"`): Linsley et al.'s paddle contours
without the original generator's artefacts, vectorised over a batch of images.

Linsley, Kim, Veerabadran, Windolf & Serre (2018), "Learning long-range spatial
dependencies with horizontal gated recurrent units", §3 and Fig. 2: an image holds
two circular markers and several contours made of short *paddles*; the label says
whether the two markers sit at the two ends of one contour. The parameters are the
LRA ones (`pathfinder_draw.STYLES`); how the LRA's own images differ is in
`pathfinder_snakes`. This set is *harder* than the LRA's: every distractor asked for
is drawn (10 at 32 px easy, where the original draws about 3), with the targets'
contrast and any orientation, as crisp dashes that can pass close to a marker.

How an image is drawn:

* Two *target contours* of `contour_length` paddles (6, 9, 14: easy, intermediate,
  hard) start `seed_distance` apart near the centre, then `distractor_paddles //
  (contour_length // 3)` distractor contours of `contour_length // 3` paddles each.
* A contour grows one paddle at a time. The next *pivot* lies `margin` past the last
  paddle's head; the new paddle starts `margin` past the pivot and points in a
  direction theta' drawn from a ring of candidates (one per pixel of arc) with weight
  cos(min(continuity * |theta' - theta|, pi/2))^2, so no turn exceeds
  pi / (2 continuity): the curvature between consecutive paddles is bounded.
* A candidate is refused if its centre line (paddle and gap) comes within
  `clearance` (about 2 * margin + thickness - 1 px, the reach of the reference's
  test that two margin-dilated paddles may not overlap) of another contour, or of an
  older piece of its own contour.
* One marker goes on the first paddle's tail of one target, the other on the last
  paddle's head of the same target (label 1) or of the other target (label 0): both
  classes show the same contours and differ only in where the second marker sits.
  Every contour has contrast snake x paddle contrast; markers are white.

Choices where the reference code is not followed literally: a contour that cannot
grow takes back its last few paddles and tries again (up to BACKTRACKS times)
instead of discarding the whole image, which keeps 64-256 px affordable where most
straight contours run into the border; directions are continuous (a random phase on
the ring) rather than snapped to pixels; clearance is measured on one-pixel centre
lines, so centre-line pixels of two different contours are never 8-adjacent; there
are no single-paddle distractors (the generator's LRA wrapper turns them off);
anti-aliasing is box-filtered supersampling by `antialias`; labels are exactly
balanced; a draw whose two markers would touch is redrawn.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SEED_TRIES = 16  # seed placements tried at once per contour
DISTRACTOR_TRIES = 4  # redraws of a distractor contour that died
BACKTRACKS = 8  # take-backs a contour may use before it dies
SPACING = 0.9  # px between centre-line points (< 1: rounded points stay 8-connected)
WALL = 1  # the claim bit of the padding and of everything outside the image


def clearance(style, margin):
    """Least distance (px) between centre lines of different contours."""
    return np.maximum(1.5, 2 * np.asarray(margin) + style.thickness - 1)


def _unit(theta) -> np.ndarray:
    return np.stack([np.sin(theta), np.cos(theta)], -1).astype(np.float32)  # (y, x)


def _line(a, b, n: int, closed: bool) -> np.ndarray:
    """n points from a towards b ([..., n, 2]); `closed` includes b."""
    t = (np.arange(n, dtype=np.float32) / (n - 1 if closed else n))[:, None]
    a, b = (x[..., None, :] for x in np.broadcast_arrays(a, b))
    return a + t * (b - a)


class _Board:
    """Who claims each pixel of a batch of images, on a grid with a wall border wide
    enough that no candidate point falls off it: bit 0 of `claims` is the wall, bit c
    is contour c; `first[slot]` is the index of the piece that first claimed the pixel
    for the contour growing in that slot (0, 1: the targets; 2: a distractor)."""

    def __init__(self, n: int, style, margin: np.ndarray):
        self.n, self.size, self.style = n, style.size, style
        m = max(style.margins)
        self.pad = style.paddle_length + 2 * m + 2
        side = self.side = style.size + 2 * self.pad
        inner = self.pad + style.padding
        claims = np.full((n, side, side), WALL, np.int32)
        claims[:, inner : side - inner, inner : side - inner] = 0
        self.claims = claims.reshape(-1)
        self.first = np.zeros((3, self.claims.size), np.int8)
        self.margin = margin
        self.reach = clearance(style, margin)
        reach = float(self.reach.max())
        r = math.floor(reach)
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        keep = oy**2 + ox**2 <= reach**2
        self.offsets = oy[keep] * side + ox[keep]  # flat offsets of the clearance disk
        self.spread = (oy[keep] ** 2 + ox[keep] ** 2).astype(np.float32)
        self.n_gap = math.ceil(m / SPACING)
        self.n_leg = math.ceil((style.paddle_length + m) / SPACING) + 1
        # Disks on every `stride`-th centre-line point (and the last) still cover the
        # 8-neighbourhood of every centre-line pixel when
        # floor(stride / 2) * SPACING + 2 sqrt(2) <= reach (rounding moves a point <= sqrt(2)/2).
        spare = float(self.reach.min()) - 2 * math.sqrt(2)
        stride = 2 * math.floor(spare / SPACING) + 1 if spare >= 0 else 1
        count = self.n_gap + self.n_leg
        self.stamp_at = np.unique(np.r_[np.arange(0, count, stride), count - 1])

    def piece(self, a, pivot, b) -> np.ndarray:
        """Centre-line points of the piece a -> pivot -> b: gap, then paddle."""
        a, pivot, b = np.broadcast_arrays(a, pivot, b)
        return np.concatenate(
            [_line(a, pivot, self.n_gap, False), _line(pivot, b, self.n_leg, True)], -2)

    def index(self, rows, pts) -> np.ndarray:
        """Flat grid index of each point (pts [B, ..., 2] in image coordinates)."""
        yx = np.rint(pts).astype(np.int32) + self.pad
        r = rows.reshape((-1,) + (1,) * (pts.ndim - 2))
        return (r * self.side + yx[..., 0]) * self.side + yx[..., 1]

    def blocked(self, rows, pts, bit, slot: int, k) -> np.ndarray:
        """True where a candidate piece k (pts [B, ..., P, 2]) of the contour with claim
        bit `bit` (per row) may not go: a point on the wall, near another contour, or
        near one of this contour's pieces older than k - 1."""
        idx = self.index(rows, pts)
        own = self.claims[idx]
        shape = (-1,) + (1,) * (pts.ndim - 2)
        bit = np.reshape(bit, shape)
        old = self.first[slot][idx] < np.reshape(k, shape) - 1
        return (((own & ~bit) != 0) | (((own & bit) != 0) & old)).any(-1)

    def footprint(self, rows, pts) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the pixels within clearance of pieces pts [B, P, 2], and
        which of them count for each row's own clearance ([B, S * D] each)."""
        idx = self.index(rows, pts[:, self.stamp_at])[:, :, None] + self.offsets  # [B, S, D]
        flat = idx.shape[1] * idx.shape[2]
        near = self.spread <= self.reach[rows, None] ** 2  # [B, D]
        ok = np.broadcast_to(near[:, None, :], idx.shape)
        return idx.reshape(len(rows), flat), ok.reshape(len(rows), flat)

    def stamp(self, rows, pts, bit, slot: int, k) -> None:
        """Claim with `bit` every pixel within clearance of piece k (pts [B, P, 2])."""
        idx, ok = self.footprint(rows, pts)
        idx = idx[ok]
        kk = np.broadcast_to(np.reshape(k, (-1, 1)), ok.shape)[ok]
        bits = np.broadcast_to(np.reshape(bit, (-1, 1)), ok.shape)[ok]
        fresh = (self.claims[idx] & bits) == 0
        self.first[slot][idx[fresh]] = kk[fresh]
        self.claims[idx] |= bits

    def erase(self, rows, pts, bit, slot: int, start) -> None:
        """Take back the claims of pieces >= start (per row) of the contour with claim
        bit `bit`, given the centre lines pts [M, P, 2] of those pieces."""
        if not len(rows):
            return
        idx, _ = self.footprint(rows, pts)
        bit, start = np.reshape(bit, (-1, 1)), np.reshape(start, (-1, 1))
        drop = ((self.claims[idx] & bit) != 0) & (self.first[slot][idx] >= start)
        idx, bit = idx[drop], np.broadcast_to(bit, drop.shape)[drop]
        self.claims[idx] &= ~bit


@dataclasses.dataclass
class _Drawn:
    """Finished contours: the paddles and pivots of contour `cid` in images `rows`."""

    cid: np.ndarray  # [R]
    rows: np.ndarray  # [R]
    start: np.ndarray  # [R, length, 2]; paddle j runs start[j] -> head[j]
    head: np.ndarray
    pivot: np.ndarray  # pivot[0] = start[0]


class _Contour:
    """A contour growing in each image of a batch, each image at its own pace.

    `cid` (per image) is the id of the contour now growing there: the two targets keep
    theirs, distractors of one image are grown one after another by one object. When no
    candidate is free, the contour takes back its last f paddles (f = its failures so
    far, keeping at least its first) and goes on; after BACKTRACKS failures it dies
    and is erased.
    """

    def __init__(self, board: _Board, cid: int, slot: int, length: int):
        n = board.n
        self.board, self.slot, self.length = board, slot, length
        self.cid = np.full(n, cid, np.int64)
        self.k = np.zeros(n, np.int64)  # paddles in place
        self.fails = np.zeros(n, np.int64)
        self.dead = np.zeros(n, bool)
        self.start = np.zeros((n, length, 2), np.float32)
        self.head = np.zeros((n, length, 2), np.float32)
        self.pivot = np.zeros((n, length, 2), np.float32)
        self.theta = np.zeros((n, length), np.float32)
        style = board.style
        radius = style.paddle_length + max(style.margins)
        reach = math.pi / (2 * style.continuity)  # largest turn with weight > 0
        half = math.floor(reach * radius)  # candidates one pixel of arc apart
        self.turns = (np.arange(-half, half + 1) / radius).astype(np.float32)
        self.arc = 1.0 / radius

    def bits(self, rows) -> np.ndarray:
        return np.left_shift(1, self.cid[rows]).astype(np.int32)

    @property
    def active(self) -> np.ndarray:
        return (self.k > 0) & (self.k < self.length) & ~self.dead

    @property
    def done(self) -> np.ndarray:
        return (self.k == self.length) & ~self.dead

    def reset(self, rows) -> None:
        self.k[rows], self.fails[rows], self.dead[rows] = 0, 0, False

    def seed(self, rng, rows, tails) -> None:
        """Place paddle 0 at the first free one of the candidate tails [B, T, 2]."""
        if not len(rows):
            return
        board = self.board
        tails = tails.astype(np.float32)
        theta = rng.uniform(-np.pi, np.pi, tails.shape[:2]).astype(np.float32)
        heads = tails + board.style.paddle_length * _unit(theta)
        pts = board.piece(tails, tails, heads)
        zero = np.zeros(len(rows), np.int64)
        good = ~board.blocked(rows, pts, self.bits(rows), self.slot, zero)
        found = good.any(1)
        self.dead[rows[~found]] = True
        at, pick, rows = np.flatnonzero(found), good.argmax(1)[found], rows[found]
        self.start[rows, 0] = self.pivot[rows, 0] = tails[at, pick]
        self.head[rows, 0], self.theta[rows, 0] = heads[at, pick], theta[at, pick]
        self.k[rows] = 1
        board.stamp(rows, pts[at, pick], self.bits(rows), self.slot, zero[found])

    def step(self, rng) -> None:
        """Try to add the next paddle wherever the contour is still growing."""
        rows = np.flatnonzero(self.active)
        if not len(rows):
            return
        board, style = self.board, self.board.style
        k, bits = self.k[rows], self.bits(rows)
        m = board.margin[rows].astype(np.float32)[:, None]
        last, theta = self.head[rows, k - 1], self.theta[rows, k - 1]
        pivot = last + m * _unit(theta)
        jitter = rng.uniform(-0.5, 0.5, (len(rows), 1)).astype(np.float32) * self.arc
        turn = self.turns + jitter  # [B, K]
        weight = np.cos(np.minimum(np.abs(turn) * style.continuity, np.pi / 2)) ** 2
        phi = theta[:, None] + turn
        heads = pivot[:, None] + (style.paddle_length + m)[:, :, None] * _unit(phi)
        gap = _line(last, pivot, board.n_gap, False)
        leg = _line(pivot[:, None], heads, board.n_leg, True)
        bad = board.blocked(rows, gap, bits, self.slot, k)[:, None]
        bad = bad | board.blocked(rows, leg, bits, self.slot, k)
        weight = np.where(bad, 0.0, weight)
        total = weight.sum(1)
        grows = total > 1e-6
        draw = rng.random(len(rows)) * total
        pick = np.minimum((np.cumsum(weight, 1) < draw[:, None]).sum(1), len(self.turns) - 1)
        at, pick, r, kg = np.flatnonzero(grows), pick[grows], rows[grows], k[grows]
        self.pivot[r, kg] = pivot[at]
        self.start[r, kg] = pivot[at] + m[at] * _unit(phi[at, pick])
        self.head[r, kg], self.theta[r, kg] = heads[at, pick], phi[at, pick]
        self.k[r] = kg + 1
        pts = np.concatenate([gap[at], leg[at, pick]], 1)
        board.stamp(r, pts, bits[at], self.slot, kg)
        self._take_back(rows[~grows], k[~grows])

    def _take_back(self, rows, k) -> None:
        self.fails[rows] += 1
        dies = self.fails[rows] > BACKTRACKS
        keep = np.where(dies, 0, k - np.minimum(self.fails[rows], k - 1))
        j = np.arange(self.length)
        at, piece = np.nonzero((j >= keep[:, None]) & (j < k[:, None]))
        r = rows[at]
        before = self.head[r, piece - 1]
        before[piece == 0] = self.start[r[piece == 0], 0]
        pts = self.board.piece(before, self.pivot[r, piece], self.head[r, piece])
        self.board.erase(r, pts, self.bits(r), self.slot, keep[at])
        self.k[rows] = keep
        self.dead[rows[dies]] = True

    def drawn(self, rows) -> _Drawn:
        return _Drawn(self.cid[rows], rows, self.start[rows], self.head[rows], self.pivot[rows])


def _distractors(board: _Board, rng, count: int, length: int, rows) -> list[_Drawn]:
    """`count` distractor contours (ids 3, 4, ...) in each image of `rows`, one after
    another; one that dies is redrawn up to DISTRACTOR_TRIES times, then left out."""
    c = _Contour(board, 3, 2, length)
    out = []
    tries = np.zeros(board.n, np.int64)
    wants = np.zeros(board.n, bool)
    wants[rows] = count > 0
    while wants.any():
        fresh = np.flatnonzero(wants & (c.k == 0) & ~c.dead)
        tails = rng.uniform(0, board.size - 1, (len(fresh), SEED_TRIES, 2))
        c.seed(rng, fresh, tails)
        c.step(rng)
        finished = np.flatnonzero(wants & c.done)
        out.append(c.drawn(finished))
        died = np.flatnonzero(wants & c.dead)
        tries[died] += 1
        moves = np.concatenate([finished, died[tries[died] > DISTRACTOR_TRIES]])
        tries[moves] = 0
        c.cid[moves] += 1
        wants[moves[c.cid[moves] >= 3 + count]] = False
        c.reset(np.concatenate([finished, died]))
    return out


def _stroke(canvas, a, b, rows, radius: float, s: int) -> None:
    """Set the supersamples of canvas [n, s*H, s*W] within `radius` px of segments a-b
    ([M, 2] each, drawn into image rows[m])."""
    if not len(rows):
        return
    half = math.ceil(float(np.abs(b - a).max()) / 2 + radius)
    q = np.arange(-half * s, (half + 1) * s)
    base = np.rint((a + b) / 2).astype(np.int32) * s  # [M, 2]
    qy, qx = base[:, 0, None] + q, base[:, 1, None] + q  # [M, Q] supersample indices
    py = ((qy + 0.5) / s - 0.5 - a[:, :1])[:, :, None].astype(np.float32)
    px = ((qx + 0.5) / s - 0.5 - a[:, 1:])[:, None, :].astype(np.float32)
    d = (b - a)[:, :, None, None]
    t = (py * d[:, 0] + px * d[:, 1]) / np.maximum((d**2).sum(1), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    hit = (py - t * d[:, 0]) ** 2 + (px - t * d[:, 1]) ** 2 <= radius**2
    limit = canvas.shape[1]
    hit &= ((qy >= 0) & (qy < limit))[:, :, None] & ((qx >= 0) & (qx < limit))[:, None, :]
    m, i, j = np.nonzero(hit)
    canvas[rows[m], qy[m, i], qx[m, j]] = True


def _coverage(canvas, s: int) -> np.ndarray:
    """Fraction of the s x s supersamples set in each pixel."""
    c = canvas.view(np.uint8)
    total = sum(c[:, i::s, j::s] for i in range(s) for j in range(s))
    return total.astype(np.float32) / (s * s)


def draw_batch(rng: np.random.Generator, labels: np.ndarray, style,
               contour_length: int, *, traces: bool = False) -> dict:
    """Try to draw one image per label; returns the accepted draws.

    Keys: `accepted` (bool [n]: which labels got an image), `images` uint8 [A, H, W],
    `labels`, `margin` [A], `markers` float [A, 2, 2] (y, x of the first and second
    marker), `marker_contours` [A, 2] (contour id under each marker: 1 and 2 are the
    targets, 3... distractors) and with `traces`, `traces` int16 [A, H, W]: the id of
    the contour whose centre line passes through each pixel (0 for none).
    """
    n, size, sd = len(labels), style.size, style.seed_distance
    board = _Board(n, style, rng.choice(np.asarray(style.margins), n))
    rows = np.arange(n)
    a, b = _Contour(board, 1, 0, contour_length), _Contour(board, 2, 1, contour_length)
    a.seed(rng, rows, rng.uniform(2 * sd, size - 1 - 2 * sd, (n, SEED_TRIES, 2)))
    b.seed(rng, rows, a.start[:, None, 0] + sd * _unit(rng.uniform(-np.pi, np.pi, (n, SEED_TRIES))))
    while (a.active | b.active).any():
        a.step(rng)
        b.step(rng)
        a.dead |= b.dead
        b.dead |= a.dead
    first = rng.integers(0, 2, n)
    second = np.where(labels == 1, first, 1 - first)
    tails = np.stack([a.start[:, 0], b.start[:, 0]], 1)
    heads = np.stack([a.head[:, -1], b.head[:, -1]], 1)
    markers = np.stack([tails[rows, first], heads[rows, second]], 1)
    gap = np.linalg.norm(markers[:, 0] - markers[:, 1], axis=-1)
    ok = a.done & b.done & (gap >= 2 * style.marker_radius + 1)
    keep = np.flatnonzero(ok)
    index = np.cumsum(ok) - 1  # image row -> output row
    drawn = [a.drawn(keep), b.drawn(keep)]
    drawn += _distractors(board, rng, *style.distractors(contour_length), keep)

    s = style.antialias
    ink = np.zeros((len(keep), size * s, size * s), bool)
    dots = np.zeros_like(ink)
    for d in drawn:
        _stroke(ink, d.start.reshape(-1, 2), d.head.reshape(-1, 2),
                np.repeat(index[d.rows], d.start.shape[1]), style.thickness / 2, s)
    for j in range(2):
        centre = markers[keep, j]
        _stroke(dots, centre, centre, np.arange(len(keep)), style.marker_radius, s)
    contrast = style.snake_contrast * style.paddle_contrast
    light = np.maximum(np.minimum(_coverage(ink, s) * contrast, 1.0), _coverage(dots, s))
    out = {
        "accepted": ok,
        "images": np.rint(light * 255).astype(np.uint8),
        "labels": labels[keep].astype(np.int32),
        "margin": board.margin[keep],
        "markers": markers[keep],
        "marker_contours": np.stack([first, second], 1)[keep] + 1,
    }
    if traces:
        trace = np.zeros((len(keep), size, size), np.int16)
        for d in drawn:
            before = np.concatenate([d.start[:, :1], d.head[:, :-1]], 1)
            yx = np.rint(board.piece(before, d.pivot, d.head)).astype(np.int32)
            at = np.broadcast_to(index[d.rows][:, None, None], yx.shape[:-1])
            trace[at, yx[..., 0], yx[..., 1]] = d.cid[:, None, None]
        out["traces"] = trace
    return out


def draw(rng: np.random.Generator, n: int, style, contour_length: int,
         *, traces: bool = False) -> dict:
    """`n` >= 1 images, half of each label (odd n: one more 0), in random order.

    Each round draws the missing labels, oversampled by the acceptance rate seen so
    far (at most `style.batch` at once), and keeps what is needed.
    """
    need = np.bincount(np.arange(n) % 2, minlength=2)
    parts: list[dict] = []
    rate = 1.0
    while need.any():
        want = np.repeat([0, 1], need)
        size = min(style.batch, max(len(want), math.ceil(len(want) / rate)))
        got = draw_batch(rng, np.resize(rng.permutation(want), size), style, contour_length,
                         traces=traces)
        rate = max(0.02, got.pop("accepted").mean())
        keep = np.concatenate([np.flatnonzero(got["labels"] == v)[: need[v]] for v in (0, 1)])
        parts.append({k: v[keep] for k, v in got.items()})
        need -= np.bincount(got["labels"][keep], minlength=2)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = rng.permutation(n)
    return {k: v[order] for k, v in out.items()}
