"""The slimming coefficients as the patch applies them (folded into the adjacent weights) give the same gradients as
the straightforward formulation: the head's output, the head's query or the intermediate activation times its
coefficient. The reference is the model with slimming off and the coefficients applied by hooks to those activations,
compared in float64 so that any difference is a formula's, not rounding's."""

import pytest
import torch
from test_patch_models import MODELS, coefficients, make_inputs, make_model, randomize_coefficients
from transformers import ViTModel


def layer_modules(model):
    """Per layer: (query projection, attention output projection, FFN second linear) and the patched model's
    (head coefficient, neuron coefficient)."""
    if isinstance(model.base_model, ViTModel):
        return [(layer.attention.q_proj, layer.attention.o_proj, layer.mlp.fc2) for layer in model.base_model.layers]
    return [(layer.attention.self.query, layer.attention.output.dense, layer.output.dense)
            for layer in model.base_model.encoder.layer]


def per_head(tensor, coef):
    """`tensor` (..., heads * head_dim) with head h's slice times coef[h]."""
    return (tensor.unflatten(-1, (coef.numel(), -1)) * coef[:, None]).flatten(-2)


def apply_by_hooks(plain, head_coefs, neuron_coefs, slim_before):
    """The straightforward formulation on a model with slimming off: scale the activations."""
    for (query, out_proj, fc2), head, neuron in zip(layer_modules(plain), head_coefs, neuron_coefs):
        if slim_before:  # scaling the scores of head h before the softmax is scaling its query
            query.register_forward_hook(lambda mod, args, out, c=head: per_head(out, c))
        else:  # after the softmax: the head's output, the input of the attention output projection
            out_proj.register_forward_pre_hook(lambda mod, args, c=head: (per_head(args[0], c),))
        fc2.register_forward_pre_hook(lambda mod, args, c=neuron: (args[0] * c,))


def backward(model, inputs):
    inputs = {k: v.clone().requires_grad_() if v.is_floating_point() else v for k, v in inputs.items()}
    model(**inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
    return {k: v.grad for k, v in inputs.items() if v.is_floating_point()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("slim_before", [False, True])
def test_gradients_equal_the_activation_formulation_in_float64(model, attn, slim_before):
    torch.manual_seed(0)
    slim = make_model(model, attn, self_slimming=True, inter_slimming=True, slim_before=slim_before).double()
    randomize_coefficients(slim)
    plain = make_model(model, attn).double()
    missing, unexpected = plain.load_state_dict(slim.state_dict(), strict=False)
    assert not missing and all(k.endswith("slimming_coef") for k in unexpected)
    coefs = [c.detach().clone().requires_grad_() for c in coefficients(slim)]
    apply_by_hooks(plain, coefs[0::2], coefs[1::2], slim_before)  # per layer: heads, then neurons
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in make_inputs(model, masked=True).items()}
    input_grads = backward(slim, inputs), backward(plain, inputs)

    def assert_equal_in_float64(got, ref, name, scale=None):  # relative to `scale`, default the reference's largest
        scale = scale or ref.abs().max().item()
        assert scale > 0, name  # not trivially zero
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * scale, msg=name)

    for i, (got, ref) in enumerate(zip(coefficients(slim), coefs)):
        assert_equal_in_float64(got.grad, ref.grad, f"coefficient {i}")
    params = dict(plain.named_parameters())
    largest = max(p.grad.abs().max().item() for p in params.values())  # some (the key bias) are 0 up to rounding
    for name, param in slim.named_parameters():
        if not name.endswith("slimming_coef"):
            assert_equal_in_float64(param.grad, params[name].grad, name, largest)
    for name in input_grads[0]:
        assert_equal_in_float64(input_grads[0][name], input_grads[1][name], name)


@pytest.mark.parametrize("model", MODELS)
def test_under_bf16_autocast_the_coefficients_stay_fp32_and_match_the_activation_formulation(model):
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True)
    randomize_coefficients(slim)
    plain = make_model(model)
    plain.load_state_dict(slim.state_dict(), strict=False)
    coefs = [c.detach().clone().requires_grad_() for c in coefficients(slim)]
    apply_by_hooks(plain, coefs[0::2], coefs[1::2], slim_before=False)
    inputs = make_inputs(model, masked=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        backward(slim, inputs)
        backward(plain, inputs)
        assert slim(**inputs).logits.dtype == plain(**inputs).logits.dtype == torch.bfloat16
    for got, ref in zip(coefficients(slim), coefs):
        assert got.dtype == torch.float32 and got.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, ref.grad, rtol=0, atol=5e-2 * ref.grad.abs().max().item())
