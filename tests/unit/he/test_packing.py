"""Column-wise packing: sentinel positions, zero padding, scaling by the bounds."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import InputError
from tessera.he.packing import (
    MIN_SENTINEL_FRACTION,
    SENTINEL_HIGH,
    SENTINEL_LOW,
    Layout,
    Stream,
    pack,
    plan_layout,
    scale_columns,
    sentinel_values,
)


@pytest.mark.parametrize("rows", [1, 100, 4032, 4033, 20000, 100000])
def test_layouts_hold_every_row_and_enough_sentinels(rows: int) -> None:
    layout = plan_layout(rows, 4096)
    z = len(layout.sentinels)
    assert 4096 * MIN_SENTINEL_FRACTION <= z <= 2048
    assert layout.chunks * layout.per_chunk >= rows > (layout.chunks - 1) * layout.per_chunk
    chunk, slot = layout.row_positions()
    assert len(set(zip(chunk.tolist(), slot.tolist(), strict=True))) == rows
    assert not set(slot.tolist()) & set(layout.sentinels)
    assert Layout.from_dict(layout.to_dict()) == layout
    if rows == 20000:
        assert (layout.chunks, z) == (5, 96)  # the spare slots all become sentinels


def test_sentinel_positions_are_fresh_each_time() -> None:
    assert plan_layout(5000, 4096).sentinels != plan_layout(5000, 4096).sentinels


def test_pack_places_rows_sentinels_and_zero_padding() -> None:
    streams = (Stream("a", 0, 10), Stream("m", 0, 1, binary=True))
    values = np.array([[5.0, 1.0], [10.0, 0.0], [0.0, 1.0]])
    scaled = scale_columns(values, streams)
    assert scaled.tolist() == [[0.5, 1.0], [1.0, 0.0], [0.0, 1.0]]
    layout = plan_layout(3, 64)
    sentinels = sentinel_values(streams, layout)
    assert np.all((sentinels[0] >= SENTINEL_LOW) & (sentinels[0] <= SENTINEL_HIGH))
    assert set(np.unique(sentinels[1]).tolist()) <= {0.0, 1.0}
    slots = pack(scaled, layout, sentinels)
    _, where = layout.row_positions()
    assert slots[:, 0, where].T.tolist() == scaled.tolist()
    assert np.array_equal(slots[:, 0, layout.sentinel_index()], sentinels[:, 0])
    assert np.all(slots[:, 0, layout.padding_positions()] == 0.0)
    assert layout.padding == layout.per_chunk - 3


def test_values_outside_the_bounds_are_refused_naming_the_row() -> None:
    streams = (Stream("age", 18, 100),)
    with pytest.raises(InputError, match="column age, row 2: outside the bounds"):
        scale_columns(np.array([[20.0], [101.0]]), streams)
    with pytest.raises(InputError, match="finite"):
        scale_columns(np.array([[np.nan]]), streams)
    assert scale_columns(np.array([[3.0]]), (Stream("k", 3, 3),)).tolist() == [[0.0]]


def test_malformed_layouts_are_refused() -> None:
    with pytest.raises(InputError):
        Layout(64, 10, 1, (1, 1))
    with pytest.raises(InputError):
        Layout(64, 10, 2, (1, 2))  # 10 rows fit one chunk
    with pytest.raises(InputError):
        Layout.from_dict({"slots": 64, "rows": 1, "chunks": 1, "sentinels": ["x"]})
