"""The fusion registry and its modules (finetune/fusions/): every kind builds and keeps the token shape; Shap-CA's
adaptive fusion; MGIPS-CL's MGE maps, interweave residuals, pre-post gate and gradient flow."""
import pytest
import torch

from common.errors import ConfigError
from finetune.config import FusionConfig
from finetune.fusions import FUSIONS, build_fusion
from finetune.fusions.adaptive import AdaptiveFusion
from finetune.fusions.mgi import Excavator, MultiGranularityInterweave

D, N, L, I = 16, 3, 7, 5


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens, image = torch.randn(N, L, D, generator=g), torch.randn(N, I, D, generator=g)
    attention = torch.ones(N, L, dtype=torch.bool)
    attention[0, 5:] = False  # post 0: two padded tokens
    text = attention.clone()
    text[:, 4:] = False
    ctx = attention & ~text  # positions 4.. of posts 1 and 2 are context tokens; post 0 has context at 4 only
    return tokens, image, {"attention": attention, "text": text, "ctx": ctx}


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_every_registered_fusion_keeps_token_shape(kind):
    torch.manual_seed(0)
    fusion = build_fusion(D, FusionConfig(kind=kind, heads=2), 0.0)
    tokens, image, masks = inputs()
    out = fusion(tokens, image, masks)
    assert out["tokens"].shape == (N, L, D) and torch.isfinite(out["tokens"]).all()
    if "text_vec" in out:
        assert out["text_vec"].shape == (N, D) and out["image_vec"].shape == (N, D)


def test_unknown_fusion_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion.kind: unknown fusion 'gated'; known: adaptive, imm, mgi, none"):
        FusionConfig(kind="gated")


def test_none_fusion_returns_the_encoder_states():
    tokens, image, masks = inputs()
    assert build_fusion(D, FusionConfig(kind="none"), 0.0)(tokens, image, masks)["tokens"] is tokens


def test_adaptive_fusion_reads_image_and_context():
    torch.manual_seed(0)
    fusion = AdaptiveFusion(D, FusionConfig(heads=2), dropout=0.0).eval()
    tokens, image, masks = inputs()
    base = fusion(tokens, image, masks)["tokens"]
    assert not torch.allclose(base, fusion(tokens, image + 1.0, masks)["tokens"])  # the image is read
    no_ctx = {**masks, "ctx": torch.zeros_like(masks["ctx"])}
    assert torch.equal(fusion.bridge(tokens, no_ctx["ctx"]), torch.zeros(N, D))  # no context: B = 0
    assert not torch.allclose(base, fusion(tokens, image, no_ctx)["tokens"])  # the context gates the attention


def test_mge_maps_normalise_over_their_axes_and_skip_padding():
    torch.manual_seed(0)
    mge = Excavator(D, "both", 0.0)
    a, b = torch.randn(N, L, D), torch.randn(N, I, D)
    a_mask = torch.ones(N, L, dtype=torch.bool)
    a_mask[0, 5:] = False
    b_mask = torch.ones(N, I, dtype=torch.bool)
    m_c, m_f, _ = mge.maps(a, b, a_mask, b_mask)
    assert m_c.shape == m_f.shape == (N, L, I)
    # row-grained: each B column is a distribution over A's real rows (dim -2); column-grained: each real A row
    # is a distribution over B (dim -1); padded rows get no weight in either
    assert torch.allclose(m_c.sum(-2), torch.ones(N, I), atol=1e-5)
    assert torch.allclose(m_f.sum(-1)[a_mask], torch.ones(int(a_mask.sum())), atol=1e-5)
    assert m_c[0, 5:].abs().max() == 0 and m_f[0, 5:].abs().max() == 0
    # B padded: no weight on it from either map
    m_c, m_f, _ = mge.maps(b, a, b_mask, a_mask)  # A = image, B = text with padding
    assert m_c[0, :, 5:].abs().max() == 0 and m_f[0, :, 5:].abs().max() == 0
    assert torch.allclose(m_f.sum(-1), torch.ones(N, I), atol=1e-5)


@pytest.mark.parametrize("granularity", ["row", "column"])
def test_mge_single_granularity_uses_one_map(granularity):
    torch.manual_seed(0)
    both, one = Excavator(D, "both", 0.0), Excavator(D, granularity, 0.0)
    one.load_state_dict(both.state_dict())
    a, b, am, bm = torch.randn(N, L, D), torch.randn(N, I, D), torch.ones(N, L, dtype=torch.bool), torch.ones(
        N, I, dtype=torch.bool)
    m_c, m_f, b_enc = both.maps(a, b, am, bm)
    expect = (m_c if granularity == "row" else m_f) @ b_enc
    assert torch.allclose(one(a, b, am, bm), both.f3(expect), atol=1e-6)


def mgi(**kw) -> MultiGranularityInterweave:
    torch.manual_seed(0)
    return MultiGranularityInterweave(D, FusionConfig(kind="mgi", heads=2, **kw), 0.0).eval()


def test_interweave_residuals_pass_states_through_when_the_mges_add_nothing():
    fusion = mgi(interweave_layers=2)
    for mge in (fusion.image_mge, fusion.text_mge):
        torch.nn.init.zeros_(mge.f3.weight)
        torch.nn.init.zeros_(mge.f3.bias)
    h_t, h_v, masks = inputs()
    post, x_v = fusion.interweave(h_t, h_v, masks["attention"])
    assert torch.equal(post, h_t) and torch.equal(x_v, h_v)  # Eq. 10-11: X_l = X_{l-1} + MGE(...), T likewise
    # with the MGEs live, both streams move
    fusion = mgi(interweave_layers=2)
    post, x_v = fusion.interweave(h_t, h_v, masks["attention"])
    assert not torch.allclose(post, h_t) and not torch.allclose(x_v, h_v)


def test_pre_post_gate_extremes_select_pre_or_post_fusion_states():
    fusion = mgi()
    pre, post = torch.randn(N, L, D), torch.randn(N, L, D)
    torch.nn.init.zeros_(fusion.gate_post.weight)
    torch.nn.init.zeros_(fusion.gate_pre.weight)
    torch.nn.init.constant_(fusion.gate_post.bias, 50.0)  # I -> 1: z = H^t (pre-fusion)
    assert torch.allclose(fusion.gate(pre, post), pre)
    torch.nn.init.constant_(fusion.gate_post.bias, -50.0)  # I -> 0: z = T^t (post-fusion)
    assert torch.allclose(fusion.gate(pre, post), post)


def test_mgi_gradients_reach_both_modalities_and_every_part():
    fusion = mgi(mutual_layers=2).train()
    tokens, image, masks = inputs()
    tokens.requires_grad_(True)
    image.requires_grad_(True)
    out = fusion(tokens, image, masks)
    (out["tokens"].pow(2).sum() + out["text_vec"].sum() + out["image_vec"].sum()).backward()
    assert tokens.grad.abs().sum() > 0 and image.grad.abs().sum() > 0
    # the image reaches the token states through the fusion alone (not only through image_vec)
    image2 = image.detach().clone().requires_grad_(True)
    fusion(tokens.detach(), image2, masks)["tokens"].sum().backward()
    assert image2.grad.abs().sum() > 0
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead


def test_mutual_attention_text_stream_reads_the_image_embeddings_at_layer_one():
    fusion = mgi(mutual_layers=1)
    tokens, image, masks = inputs()
    h_t, _ = fusion.encode(tokens, image, masks["attention"])
    h_t2, _ = fusion.encode(tokens, image * 2.0, masks["attention"])
    assert not torch.allclose(h_t, h_t2)  # Eq. 3: K^t_1 = [V^e, S^e W^k_1]
    # a padded text token changes nothing for the real ones
    t2 = tokens.clone()
    t2[0, 5:] = 100.0
    h_t3, h_v3 = fusion.encode(t2, image, masks["attention"])
    assert torch.allclose(h_t3[0, :5], h_t[0, :5], atol=1e-5)


# --- IMM ----------------------------------------------------------------------------------------------------------
from finetune.fusions.imm import ImplicitModalityMining, InsertActivationFFN, SharedBlock  # noqa: E402


def imm(**kw) -> ImplicitModalityMining:
    torch.manual_seed(0)
    return ImplicitModalityMining(D, FusionConfig(kind="imm", heads=2, **kw), 0.0).eval()


def test_isa_shares_norm_and_attention_but_not_the_feed_forward_layers():
    block = SharedBlock(D, 2, 0.0).eval()
    names = {n.split(".")[0] for n, _ in block.named_parameters()}
    assert names == {"norm1", "norm2", "attn", "ffn_t", "ffn_v"}  # one LN_1, MHA, LN_2; two FFNs
    assert all(a is not b for a, b in zip(block.ffn_t.parameters(), block.ffn_v.parameters()))
    t, v, masks = inputs()
    t_out, v_out = block(t, v, masks["attention"])
    with torch.no_grad():  # the text FFN moves only the text states, the image FFN only the image states
        block.ffn_t[2].bias += 1.0
    t2, v2 = block(t, v, masks["attention"])
    assert torch.allclose(v2, v_out) and not torch.allclose(t2, t_out)
    with torch.no_grad():  # the shared attention moves both
        block.attn.out_proj.bias += 1.0
    t3, v3 = block(t, v, masks["attention"])
    assert not torch.allclose(v3, v2) and not torch.allclose(t3, t2)


def test_insert_activation_without_slots_is_a_plain_ffn():
    torch.manual_seed(0)
    h_t, h_v = torch.randn(N, L, D), torch.randn(N, I, D)
    plain = InsertActivationFFN(D, 0, 0.0)
    assert not hasattr(plain, "phi_k")
    expect = plain.value(torch.nn.functional.gelu(plain.key(h_t)))  # f(h K^T) V, Eq. 15
    assert torch.allclose(plain(h_t, h_v), expect)
    slotted = InsertActivationFFN(D, 2, 0.0)
    slotted.load_state_dict(plain.state_dict(), strict=False)
    assert not torch.allclose(slotted(h_t, h_v), expect)  # the inserted visual slots add to it
    torch.nn.init.zeros_(slotted.phi_v.weight)
    torch.nn.init.zeros_(slotted.phi_v.bias)
    assert torch.allclose(slotted(h_t, h_v), expect)  # zero inserted values: a plain FFN again


def test_imm_text_states_read_the_image_and_gradients_reach_it():
    fusion = imm().train()
    tokens, image, masks = inputs()
    image.requires_grad_(True)
    out = fusion(tokens, image, masks)
    assert set(out["sw"]) == {"sent_t", "sent_v", "word_t", "word_v"}
    out["tokens"].pow(2).sum().backward()
    assert image.grad.abs().sum() > 0
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # the last IA block's visual FFN feeds nothing after it (the tokens returned are the text states)
    assert all(".ffn_v." in n or ".norm_v" in n or ".attn_v." in n for n in dead), dead


def test_gradients_reach_the_patch_embedder_through_imm():
    from common.fusion import FusionEncoder, ModelConfig

    torch.manual_seed(0)
    enc = FusionEncoder(ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=0))
    fusion = ImplicitModalityMining(enc.dim, FusionConfig(kind="imm", heads=4, isa_layers=1, ia_layers=1), 0.0)
    ids = enc.tokenizer(["Kyrie Irving scores"], return_tensors="pt")
    H = enc.text(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])["tokens"]
    img = enc.encode_image(torch.randn(1, 3, 32, 32))
    E = enc.fuse(H, ids["attention_mask"], img["cls"], img["patches"])
    T = H.shape[1]
    mask = ids["attention_mask"].bool()
    fusion(E[:, :T], E[:, T:], {"attention": mask, "text": mask, "ctx": ~mask})["tokens"].sum().backward()
    assert enc.vision.proj.weight.grad.abs().sum() > 0


def test_adaptive_paper_bridge_is_eq_8_as_printed():
    torch.manual_seed(0)
    fusion = AdaptiveFusion(D, FusionConfig(heads=2, bridge="paper"), dropout=0.0)
    ctx = torch.randn(N, L, D)
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[1, 3:] = False
    for i in range(N):
        C = ctx[i][mask[i]]  # the post's real context rows (n_c, D)
        M = C.T @ C / D ** 0.5  # (D, D)
        assert torch.allclose(fusion.bridge(ctx, mask)[i], M.mean(0), atol=1e-5)
        assert torch.allclose(M.mean(0), M.mean(1), atol=1e-5)  # symmetric: either axis
    assert torch.equal(fusion.bridge(ctx, torch.zeros_like(mask)), torch.zeros(N, D))
