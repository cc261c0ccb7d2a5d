"""Small mesh utilities used when the built-in head is built (numpy/scipy, build time only)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def edges_of(tris: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) of a triangle list."""
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def boundary_loops(tris: np.ndarray) -> list[list[int]]:
    """Closed boundary loops (edges used by one triangle), each as an ordered vertex list."""
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    und = np.sort(directed, axis=1)
    _, inv, cnt = np.unique(und, axis=0, return_inverse=True, return_counts=True)
    single = directed[cnt[inv.ravel()] == 1]
    nxt = {int(a): int(b) for a, b in single}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so neighbours agree (breadth-first over shared edges)."""
    tris = tris.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for f, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(f)
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            f = queue.pop()
            t = tris[f]
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                for g in edge_faces[(min(a, b), max(a, b))]:
                    if done[g]:
                        continue
                    u = tris[g]
                    same = any((u[i], u[(i + 1) % 3]) == (a, b) for i in range(3))
                    if same:
                        tris[g] = u[[0, 2, 1]]
                    done[g] = True
                    queue.append(g)
    return tris


def face_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-12)


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, tris[:, k], n)
    return vn / (np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12)


def laplacian(n: int, tris: np.ndarray) -> sp.csr_matrix:
    """Uniform graph Laplacian L = D - A (positive semi-definite)."""
    e = edges_of(tris)
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64)
    d = sp.diags(np.asarray(a.sum(1)).ravel())
    return (d - a).tocsr()


def harmonic(lap: sp.csr_matrix, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve L u = 0 on the free vertices with u[fixed] = values (values: (k,) or (k, d))."""
    n = lap.shape[0]
    values = np.asarray(values, np.float64)
    out_shape = (n,) + values.shape[1:]
    u = np.zeros(out_shape)
    u[fixed] = values
    free = np.setdiff1d(np.arange(n), fixed)
    if len(free) == 0:
        return u
    lff = lap[free][:, free].tocsc()
    rhs = -(lap[free][:, fixed] @ values)
    sol = spla.splu(lff).solve(rhs)
    u[free] = sol
    return u


def smooth_free(verts: np.ndarray, tris: np.ndarray, movable: np.ndarray, iterations: int, step=0.5) -> np.ndarray:
    """Laplacian smoothing of the vertices in ``movable`` (bool mask); others stay put."""
    lap = laplacian(len(verts), tris)
    deg = lap.diagonal()
    adj = sp.diags(deg) - lap
    v = verts.copy()
    for _ in range(iterations):
        avg = (adj @ v) / np.maximum(deg, 1)[:, None]
        v[movable] += step * (avg[movable] - v[movable])
    return v


def zipper(loop_a: list[int], loop_b: list[int], verts: np.ndarray) -> np.ndarray:
    """Triangulate the strip between two closed loops running the same way round.

    Both loops must start at roughly corresponding vertices; at each step the shorter of
    the two possible diagonals is added.
    """
    n, m = len(loop_a), len(loop_b)
    i = j = 0
    tris = []
    while i < n or j < m:
        a0, a1 = loop_a[i % n], loop_a[(i + 1) % n]
        b0, b1 = loop_b[j % m], loop_b[(j + 1) % m]
        advance_a = j >= m or (
            i < n and np.linalg.norm(verts[a1] - verts[b0]) <= np.linalg.norm(verts[a0] - verts[b1])
        )
        if advance_a:
            tris.append((a0, a1, b0))
            i += 1
        else:
            tris.append((a0, b1, b0))
            j += 1
    return np.array(tris, dtype=np.int64)


def subdivide(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """One 1-to-4 split; new edge points lie on cubic Hermite curves through the end points
    (tangents from the vertex normals), so the surface gets rounder, and old vertices stay."""
    normals = vertex_normals(verts, tris)
    edges = edges_of(tris)
    a, b = verts[edges[:, 0]], verts[edges[:, 1]]
    na, nb = normals[edges[:, 0]], normals[edges[:, 1]]
    d = b - a
    ta = d - (d * na).sum(1, keepdims=True) * na
    tb = d - (d * nb).sum(1, keepdims=True) * nb
    mids = (a + b) / 2 + (ta - tb) / 8
    index = {(int(i), int(j)): len(verts) + k for k, (i, j) in enumerate(edges)}
    mid = lambda i, j: index[(min(i, j), max(i, j))]  # noqa: E731
    out = []
    for i, j, k in tris:
        ij, jk, ki = mid(i, j), mid(j, k), mid(k, i)
        out += [(i, ij, ki), (ij, j, jk), (ki, jk, k), (ij, jk, ki)]
    return np.concatenate([verts, mids]), np.array(out, np.int64)
