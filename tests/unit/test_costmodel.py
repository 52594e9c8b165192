"""The cost model's formulas against hand-computed cases, and its path choice against mpicoll's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mpicoll import compression
from mpicoll.aggregation.choice import choose_path
from mpicoll.errors import ArgumentError
from mpicoll.model import Choice, CodecRates, Layout, Link, Machine, break_even, choose_codec, compressed_seconds, costs
from mpicoll.model.predict import auto_path, gbit
from mpicoll.model.rules import ROUND_BYTES, SPARSE_ALLGATHER_MAX_RANKS, prefer_single_pass, sparse_path

MB = 1 << 20


def test_ring_on_four_hosts():
    c = costs.ring(MB, Layout(4, 1))
    assert c.rounds == {"inter": 6} and c.bytes == {"inter": 1.5 * MB} and c.reduce_bytes == 0.75 * MB


def test_recursive_doubling_charges_the_shared_link_across_hosts():
    # 2 hosts x 2 ranks: stage 0 (partner 1 apart) inside the host, stage 1 (2 apart) across, both
    # ranks of a host sending over its one link at once
    c = costs.recursive_doubling(MB, Layout(2, 2))
    assert c.rounds == {"intra": 1, "inter": 1} and c.bytes == {"intra": MB, "inter": 2 * MB}
    assert c.reduce_bytes == 2 * MB


def test_recursive_doubling_folds_the_extra_ranks():
    c = costs.recursive_doubling(MB, Layout(1, 3))  # k = 2: fold (2 rounds, 2n, one reduction) + 1 stage
    assert c.rounds == {"intra": 3} and c.bytes == {"intra": 3 * MB} and c.reduce_bytes == 2 * MB


def test_rabenseifner_moves_twice_k_minus_one_over_k():
    c = costs.rabenseifner(MB, Layout(1, 4))
    assert c.rounds == {"intra": 4} and c.bytes == {"intra": 1.5 * MB} and c.reduce_bytes == 0.75 * MB
    # one rank per host: the ring's bytes in log2 p rounds per phase instead of p - 1
    flat, ring = costs.rabenseifner(MB, Layout(8, 1)), costs.ring(MB, Layout(8, 1))
    assert flat.rounds == {"inter": 6} and ring.rounds == {"inter": 14}
    assert flat.bytes == ring.bytes == {"inter": 1.75 * MB} and flat.reduce_bytes == ring.reduce_bytes


def test_rabenseifner_across_hosts_and_with_a_fold():
    # 2 hosts x 2 ranks: stage 0 (partners 2 apart, n/2 each way, twice) crosses hosts with both
    # ranks of a host on its link (2 * n/2 * 2 = 2n); stage 1 (1 apart, n/4, twice) stays inside
    c = costs.rabenseifner(MB, Layout(2, 2))
    assert c.rounds == {"inter": 2, "intra": 2} and c.bytes == {"inter": 2 * MB, "intra": 0.5 * MB}
    assert c.reduce_bytes == 0.75 * MB
    # 3 hosts: rank 0 folds into rank 1 and gets the result back (2 rounds, 2n, n reduced), then
    # one stage between two ranks (n/2 each way in each phase)
    c = costs.rabenseifner(MB, Layout(3, 1))
    assert c.rounds == {"inter": 4} and c.bytes == {"inter": 3 * MB} and c.reduce_bytes == 1.5 * MB


def test_hierarchical_crosses_the_network_once_per_host():
    c = costs.hierarchical(MB, Layout(2, 2))
    assert c.rounds == {"intra": 2, "inter": 2}
    assert c.bytes == {"intra": MB, "inter": MB}  # 2(H-1)/H n per host link, whatever q is
    flat = costs.ring(MB, Layout(2, 2))
    assert flat.bytes["inter"] == 1.5 * MB


def test_compressed_paths():
    w = 0.03 * MB
    two = costs.two_phase(MB, 0.03, Layout(4, 1))
    assert two.rounds == {"inter": 6} and two.bytes["inter"] == pytest.approx(1.5 * w)
    assert two.compress_bytes == MB + MB / 4 and two.decode_bytes == 2 * MB
    single = costs.allgather_decode(MB, 0.03, Layout(3, 1))
    assert single.rounds == {"inter": 4} and single.bytes["inter"] == pytest.approx(16 + 2 * w)
    assert single.decode_bytes == 3 * MB
    sparse = costs.sparse_rd(MB, 0.02, Layout(8, 1))  # 3 stages of 2%, 4%, 8% of n
    assert sparse.rounds == {"inter": 3} and sparse.bytes["inter"] == pytest.approx(0.14 * MB)


def test_sparse_rd_folds_a_non_power_of_two():
    """6 ranks: the fold (w), stages of 2w and 4w (the folded partner carries two ranks' pairs),
    and the finished 6w back; the result made dense (n) on top of the merges."""
    sparse = costs.sparse_rd(MB, 0.02, Layout(6, 1))
    assert sparse.rounds == {"inter": 4} and sparse.bytes["inter"] == pytest.approx(13 * 0.02 * MB)
    assert sparse.reduce_bytes == pytest.approx((0.02 + 0.04 + 0.08) * MB + MB)
    # 10%: 6w = 0.6 n passes the dense switch (a quarter of the elements, half the bytes), so the
    # vector sent back is the dense array
    dense_back = costs.sparse_rd(MB, 0.1, Layout(6, 1))
    assert dense_back.bytes["inter"] == pytest.approx((0.1 + 0.2 + 0.4 + 1.0) * MB)
    assert dense_back.reduce_bytes == pytest.approx(1.7 * MB)


def test_pairwise_stages_price_the_links_their_ranks_really_use():
    """6 ranks on 3 hosts of 2: the fold pairs 0-1 and 2-3 share a host; after it, group ranks
    0, 1, 2, 3 are real ranks 1, 3, 4, 5, so stage 1 (1-3, 4-5) crosses a network link from host
    0 and host 1 and stage 2 (1-4, 3-5) from every host."""
    layout = Layout(3, 2)
    assert costs._fold_link(layout) == ("intra", 1)
    assert costs._stage_link(1, layout) == ("inter", 1)
    assert costs._stage_link(2, layout) == ("inter", 2)
    sparse = costs.sparse_rd(MB, 0.02, layout)
    assert sparse.rounds == {"intra": 2, "inter": 2}
    assert sparse.bytes["intra"] == pytest.approx((0.02 + 0.12) * MB)
    assert sparse.bytes["inter"] == pytest.approx((0.04 + 2 * 0.08) * MB)
    # a power of two on whole hosts: as before, intra below per_host, then per_host ranks at once
    assert [costs._stage_link(d, Layout(4, 2)) for d in (1, 2, 4)] == [("intra", 1), ("inter", 2), ("inter", 2)]


def test_tree_counts_its_busiest_link_and_its_pipeline_fill():
    """Hand-computed: heap order around rank 0, segments of ``s`` (here 1 MiB)."""
    n, s = 16 * MB, MB
    # 3 ranks, a host each: reduce n up (a leaf's link), broadcast 2n down (the root's); no path
    # longer than one hop, so no fill
    c = costs.tree(n, Layout(3, 1), segment=s)
    assert c.rounds == {"inter": 2} and c.bytes == {"inter": 3 * n} and c.reduce_bytes == 2 * n
    # 4 ranks: 3 -> 1 -> 0 adds one segment to the reduce; the broadcast 0 -> 1 -> 3 costs the
    # root's 2 segment times per segment, then 1 more for rank 1's single child
    c = costs.tree(n, Layout(4, 1), segment=s)
    assert c.rounds == {"inter": 4} and c.bytes == {"inter": 3 * n + 2 * s}
    # 8 ranks: 7 -> 3 -> 1 -> 0 (fill 2); 0 -> 1 -> 3 -> 7 loads 2 + 2 + 1, less the root's 2 (fill 3)
    assert costs.tree(n, Layout(8, 1), segment=s).bytes == {"inter": 3 * n + 5 * s}
    # 2 hosts x 2: ranks 2 and 3 both send across in the reduce (to 0 and 1), ranks 0 and 1 in the
    # broadcast, so each phase puts 2n on one host's link; 1 -> 0 stays inside host 0 (no fill)
    assert costs._tree_phases(Layout(2, 2)) == ("inter", 2, 2, 0, 0)
    assert costs.tree(n, Layout(2, 2), segment=s).bytes == {"inter": 4 * n}
    # a message under one segment is one segment: every hop of the fill is the whole message
    assert costs.tree(s / 4, Layout(4, 1), segment=s).bytes == {"inter": 5 * s / 4}
    # one host: each rank's own sends (2 children in the broadcast), the same fill
    assert costs.tree(n, Layout(1, 4), segment=s).bytes == {"intra": 3 * n + 2 * s}


def test_powersgd_sends_the_two_factors():
    c = costs.powersgd(4 * 1024 * 1024, 4, Layout(2, 1))  # a 1024 x 1024 float32 matrix, rank 4
    assert c.bytes["inter"] == pytest.approx(2 * (4 * 1024 * 4))  # P and Q, each 2(p-1)/p = 1 of its bytes
    assert c.compress_bytes == c.decode_bytes == 4 * 1024 * 1024  # its products, priced by its measured speed


def test_powersgd_picks_each_factors_algorithm_for_the_factors_size():
    """The path chooses the all-reduce of P and of Q for their own (small) sizes; the model once
    chose for the whole tensor's size, so at 256 ranks it priced P and Q on the bandwidth-optimal
    ring, with its 2(p-1) rounds, and predicted PowerSGD slower at 256 ranks than at 1024."""
    m, layout, n = machine(10.0), Layout(256, 1), 97e6
    chosen = compressed_seconds(m, "powersgd", n, layout)[1]
    on_ring = m.seconds(costs.powersgd(n, 4, layout, "ring"), "powersgd")
    on_rd = m.seconds(costs.powersgd(n, 4, layout, "recursive_doubling"), "powersgd")
    assert chosen == pytest.approx(min(on_ring, on_rd, chosen)) and chosen < on_ring / 10
    picked = []
    costs.powersgd(n, 4, layout, lambda nbytes: picked.append(nbytes) or "ring")
    assert len(picked) == 2 and all(b < n / 100 for b in picked)
    hosts = Layout(32, 8)  # several ranks on several hosts: the path sums P and Q hierarchically
    assert compressed_seconds(m, "powersgd", n, hosts)[1] == pytest.approx(
        m.seconds(costs.powersgd(n, 4, hosts, "hierarchical"), "powersgd"))


def machine(gbps: float = 0.2) -> Machine:
    return Machine({"intra": Link(5e-6, 1 / 4e9), "inter": Link(100e-6, 8e-9 / gbps)}, gamma=1 / 5e9, flops=2e10,
                   codecs={"fp16": CodecRates("summable", 0.5, 2e9, 2e9, widen=2.0),
                           "sign": CodecRates("quantized", 1 / 32, 5e8, 5e9),
                           "topk": CodecRates("sparse", 0.02, 7e7, 1e9),
                           "powersgd": CodecRates("lowrank", 0.0, 1e30, 1e30, rank=4)})


def test_seconds_adds_every_term():
    m = machine(1.0)
    cost = costs.Cost({"inter": 2}, {"inter": 1e6}, reduce_bytes=5e6, compress_bytes=2e9, decode_bytes=5e9,
                      flops=2e10)
    assert m.seconds(cost, "sign") == pytest.approx(2 * 100e-6 + 1e6 * 8e-9 + 1e-3 + 4 + 1 + 1)


def test_a_shaped_links_burst_takes_off_up_to_the_codec_work():
    """A link with a burst sends that many bytes at once after idling through the call's codec work:
    the wire time shrinks by min(burst, bytes) * beta, never by more than that work; dense calls
    (no codec work) and links without a burst pay the full rate."""
    beta = 8e-9 / 0.05  # 50 Mbit/s: 160 ns per byte
    m = machine()
    m.links["inter"] = Link(0.0, beta, burst=128 * 1024)
    wire = costs.Cost({}, {"inter": 335_592.0})
    dense = wire + costs.Cost(reduce_bytes=1e6)
    assert m.seconds(dense) == pytest.approx(335_592 * beta + 1e6 / 5e9)  # no idle spell: no saving
    long_idle = wire + costs.Cost(compress_bytes=7e7 * 0.05)  # 50 ms of top-k compressing
    assert m.seconds(long_idle, "topk") == pytest.approx(0.05 + (335_592 - 128 * 1024) * beta)
    short_idle = wire + costs.Cost(compress_bytes=7e7 * 0.005)  # 5 ms: the bucket refills only that far
    assert m.seconds(short_idle, "topk") == pytest.approx(335_592 * beta)
    small = costs.Cost({}, {"inter": 1000.0}, compress_bytes=7e7 * 0.05)  # less than a bucket: all of it at once
    assert m.seconds(small, "topk") == pytest.approx(0.05)
    assert Machine.from_json(m.to_json()) == m
    assert m.with_rate(1.0).links["inter"].burst == 0  # a projection is of a link, not of the bed's shaper
    m.links["inter"] = Link(0.0, beta)
    assert m.seconds(long_idle, "topk") == pytest.approx(0.05 + 335_592 * beta)


def test_the_probe_reads_a_links_burst_from_its_pings():
    """alpha from 8 B, beta from the slope between 1 and 4 MiB, and the burst from how far 1 MiB
    falls below alpha plus its bytes at that rate: the bed's 128 KiB bucket; 0 on a plain link."""
    from mpicoll.model.probe import _fit_link

    alpha, beta, bucket = 10e-6, 8e-9 / 0.2, 128 * 1024
    shaped = _fit_link([(8, alpha), (1 << 20, alpha + ((1 << 20) - bucket) * beta),
                        (4 << 20, alpha + ((4 << 20) - bucket) * beta)])
    assert shaped.alpha == alpha and shaped.beta == pytest.approx(beta) and shaped.burst == pytest.approx(bucket)
    plain = _fit_link([(8, alpha), (1 << 20, alpha + (1 << 20) * beta * 1.01), (4 << 20, alpha + (4 << 20) * beta)])
    assert plain.burst == 0


def test_slow_links_pick_a_codec_fast_ones_none():
    slow = choose_codec(machine(0.2), 64 * MB, Layout(2, 1), ["fp16", "sign", "powersgd"])
    assert slow.codec != "none" and set(slow.predicted) == {"none", "fp16", "sign", "powersgd"}
    fast = choose_codec(machine(400.0), 64 * MB, Layout(2, 1), ["fp16", "sign", "topk"])
    assert fast.codec == "none", fast.describe()
    assert choose_codec(machine(0.2), 64 * MB, Layout(2, 1), []).codec == "none"


def test_margin_keeps_none_unless_compression_clearly_pays():
    m = machine(0.2)
    n = 64 * MB
    predicted = choose_codec(m, n, Layout(2, 1), ["fp16"]).predicted
    ratio = predicted["none"] / predicted["fp16"]
    assert choose_codec(m, n, Layout(2, 1), ["fp16"], margin=ratio - 1 + 0.01).codec == "none"
    assert choose_codec(m, n, Layout(2, 1), ["fp16"], margin=ratio - 1 - 0.01).codec == "fp16"
    assert isinstance(Choice("none", {}).describe(), str)


def test_break_even_is_a_size_from_which_compression_keeps_winning():
    m = machine(1.0)
    sizes = [float(4 << i) for i in range(0, 28, 2)]
    size = break_even(m, "fp16", Layout(8, 1), sizes)
    assert size is not None
    assert all(compressed_seconds(m, "fp16", n, Layout(8, 1))[1]
               < compressed_seconds(m, "none", n, Layout(8, 1))[1] for n in sizes if n >= size)


def test_machine_json_round_trip_and_native_curve():
    m = machine()
    m.native = {2: [(4096.0, 1e-5), (1048576.0, 1e-3)]}
    again = Machine.from_json(m.to_json())
    assert again == m
    assert again.native_seconds(2, 65536) == pytest.approx(1e-5 * (1e-3 / 1e-5) ** 0.5)
    assert again.native_seconds(2, 1 << 21) == pytest.approx(2e-3)  # the largest size's bandwidth above it
    assert again.native_seconds(2, 8) == 1e-5 and again.native_seconds(3, 65536) is None


def test_local_speeds_blend_between_the_two_rate_sizes():
    """Codec speeds and gamma timed at 4 and 16 MiB: the smaller's at or below 4 MiB (and without a
    size), the larger's at or above 16 MiB, and between them time per byte linear in log n; a
    codec or gamma without a large-array reading keeps its small-array speed everywhere."""
    m = machine(1.0)
    m.codecs["sign"] = CodecRates("quantized", 1 / 32, 2e9, 4e9, compress_Bps_large=1e9, decode_Bps_large=2e9)
    m.gamma_large = 2 / 5e9
    cost = costs.Cost(reduce_bytes=1e9, compress_bytes=1e9, decode_bytes=1e9)
    small = 1 / 5e9 * 1e9 + 1e9 / 2e9 + 1e9 / 4e9   # 0.2 + 0.5 + 0.25
    large = 2 / 5e9 * 1e9 + 1e9 / 1e9 + 1e9 / 2e9   # 0.4 + 1.0 + 0.5
    assert m.seconds(cost, "sign") == pytest.approx(small)
    assert m.seconds(cost, "sign", n=MB) == pytest.approx(small)
    assert m.seconds(cost, "sign", n=4 * MB) == pytest.approx(small)
    assert m.seconds(cost, "sign", n=64 * MB) == pytest.approx(large)
    assert m.seconds(cost, "sign", n=8 * MB) == pytest.approx((small + large) / 2)  # halfway in log n
    assert m.seconds(cost, "topk", n=64 * MB) == pytest.approx(0.4 + 1e9 / 7e7 + 1.0)  # no large codec reading
    again = Machine.from_json(m.to_json())
    assert again == m and again.seconds(cost, "sign", n=8 * MB) == pytest.approx((small + large) / 2)
    old = {k: v for k, v in m.to_json().items() if k not in ("gamma_large", "rate_sizes")}  # an older probe's file
    assert Machine.from_json(old).seconds(cost, "sign", n=64 * MB) == pytest.approx(0.2 + 1.0 + 0.5)
    with pytest.raises(ArgumentError, match="not a machine model"):
        Machine.from_json({**m.to_json(), "rate_sizes": [1, 2, 3]})


def test_rates():
    assert gbit("200mbit") == pytest.approx(0.2) and gbit("25gbit") == 25 and gbit("10") == 10
    for bad in ("fastgbit", "0gbit", "-1mbit", "nan", "abc", ""):  # a clear error, never a traceback deep inside
        with pytest.raises(ValueError, match="not a rate"):
            gbit(bad)


@pytest.mark.parametrize("name,params", [("fp16", {}), ("sign", {}), ("int8", {}), ("int4", {}), ("qsgd", {}),
                                         ("topk", {"ratio": 0.01}), ("randomk", {"ratio": 0.01}),
                                         ("powersgd", {"rank": 4}), ("none", {})])
@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("elements", [1000, 300_000, 4_000_000])
def test_the_model_takes_the_path_mpicoll_takes(name, params, p, elements):
    codec = compression.get(name, **params)
    x = np.broadcast_to(np.zeros((), np.float32), (elements,))
    expected = choose_path(codec, x, SimpleNamespace(size=p))
    payload = codec.payload_nbytes(x)
    got = auto_path(codec.kind, x.nbytes if payload is None else payload, p)
    if expected in ("ring", "tree", "recursive_doubling", "rabenseifner"):  # a summable codec: dense algorithm
        assert got == "summable"
    else:
        assert got == expected


def test_layout_of_a_communicators_hosts():
    assert Layout.of((0, 0, 1, 1)) == Layout(2, 2)
    assert Layout.of((0, 0, 0, 1)) == Layout(2, 3)  # uneven: the fullest host counts
    assert Layout.of((0,)) == Layout(1, 1)


def test_prefer_single_pass_rule():
    assert prefer_single_pass(1 << 40, 1) and prefer_single_pass(1 << 40, 2)
    assert prefer_single_pass(ROUND_BYTES * 3 // 2, 3) and not prefer_single_pass(ROUND_BYTES * 3 // 2 + 3, 3)
    assert not prefer_single_pass(1 << 20, 5)


def test_sparse_path_rule():
    assert sparse_path(SPARSE_ALLGATHER_MAX_RANKS) == "sparse_allgather"
    assert sparse_path(SPARSE_ALLGATHER_MAX_RANKS + 1) == "sparse_rd"


def test_the_rules_have_one_home():
    """aggregation acts on the same objects the model predicts with, not on copies."""
    from mpicoll.aggregation import choice, sparse
    from mpicoll.model import costs, predict, rules

    assert choice.prefer_single_pass is predict.prefer_single_pass is rules.prefer_single_pass
    assert choice.sparse_path is predict.sparse_path is rules.sparse_path
    assert sparse.DENSE_SWITCH is costs.DENSE_SWITCH is rules.DENSE_SWITCH


def test_codec_rates_measured_on_a_gpu_replace_the_probed_ones():
    """``predict --codec-rates``: the JSON gpu_check writes prices the codecs, the reduction and the
    products; a codec the GPU run could not time keeps the probe's rates; links stay."""
    base = machine(10.0)
    measured = {"gamma": 1 / 700e9, "flops": 2e12,
                "codecs": {"sign": {"kind": "quantized", "ratio": 1 / 32, "compress_Bps": 2e10, "decode_Bps": 3e11,
                                    "widen": 1.0, "rank": 0},
                           "topk": {"error": "RuntimeError: no GPU kernel"}}}
    gpu = base.with_codec_rates(measured, "H200")
    assert gpu.codec("sign").compress_Bps == 2e10 and gpu.codec("topk") == base.codec("topk")
    assert gpu.gamma == 1 / 700e9 and gpu.flops == 2e12 and gpu.links == base.links
    assert gpu.probed_on["codecs_from"] == "H200" and base.codec("sign").compress_Bps == 5e8
    layout = Layout(64, 1)
    assert compressed_seconds(gpu, "sign", 97e6, layout)[1] < compressed_seconds(base, "sign", 97e6, layout)[1]
    with pytest.raises(ArgumentError, match="codec rates"):
        base.with_codec_rates({"codecs": {}}, "bad")
