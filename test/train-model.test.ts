/**
 * The trainable decoder: forward parity with the inference engine on tiny seeded models of every
 * supported family, a float64 finite-difference check through the whole model, and training steps
 * that lower the loss.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { Tape } from '../src/train/autodiff.js';
import { gradCheck } from '../src/train/gradcheck.js';
import { TrainableModel } from '../src/train/model.js';
import { AdamW, Trainer } from '../src/train/optim.js';
import { assertClose } from './helpers/assert-close.js';
import { fixture, haveFixtures } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

function tokens(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

const loaded = new Map<string, ReturnType<typeof loadModel>>();
function tiny(family: string) {
  if (!loaded.has(family)) loaded.set(family, loadModel(writeTinyModel(TINY_CONFIGS[family], { seed: 3 }).dir));
  return loaded.get(family)!;
}

// mistral's window of 6 is shorter than S = 9, so the sliding mask is exercised
for (const family of ['mixtral', 'mistral', 'olmoe', 'llama', 'qwen2', 'qwen3_moe']) {
  test(`${family}: forward logits equal the inference engine's (relative error < 1e-5)`, async () => {
    const m = tiny(family);
    const B = 2, S = 9;
    const ids = tokens(B * S, m.config.vocabSize, 1);
    const ref = await new Transformer(m.config, m.weights).logits(ids, B, S);
    const model = new TrainableModel(m.config, m.weights);
    const { logits, aux } = await model.forward(new Tape({ grad: false }), ids, B, S);
    assertClose(logits.data, ref, 1e-5, family);
    assert.equal(aux === null, m.config.moe === null);
  });
}

// the trained fixtures run the ORT paths (GEMM, softmax, sigmoid) the tiny models are too small for
for (const name of ['dense', 'mixtral', 'olmoe']) {
  test(`fixture ${name}: forward logits equal the inference engine's at B 2 x S 128 (relative error < 1e-5)`, { skip: haveFixtures ? false : 'shared fixtures absent' }, async () => {
    const m = loadModel(fixture(name));
    const B = 2, S = 128;
    const ids = tokens(B * S, m.config.vocabSize, 6);
    const ref = await new Transformer(m.config, m.weights).logits(ids, B, S);
    const { logits } = await new TrainableModel(m.config, m.weights).forward(new Tape({ grad: false }), ids, B, S);
    assertClose(logits.data, ref, 1e-5, name);
  });
}

test('unsupported families are refused with the reason', () => {
  const m = tiny('deepseek_v3');
  assert.throws(() => new TrainableModel(m.config, m.weights), /multi-head latent attention/);
});

for (const family of ['mixtral', 'olmoe']) {
  test(`${family}: float64 gradients of the whole model (ce + aux) match finite differences`, async () => {
    const m = tiny(family);
    const model = new TrainableModel(m.config, m.weights, { dtype: 'f64' });
    const B = 2, S = 4;
    const ids = tokens(B * S, m.config.vocabSize, 2);
    const targets = tokens(B * S, m.config.vocabSize, 3);
    const names = ['embed', 'lm_head', 'layers.0.attn.q.weight', 'layers.0.attn.k.weight', 'layers.1.attn.v.weight', 'layers.0.attn.o.weight',
      'layers.0.attn_norm.weight', 'layers.1.ffn_norm.weight', 'layers.0.moe.router.weight', 'layers.1.moe.experts.gate', 'layers.0.moe.experts.down', 'norm.weight'];
    if (family === 'olmoe') names.push('layers.0.attn.q_norm.weight', 'layers.1.attn.k_norm.weight');
    const r = await gradCheck(async (t) => (await model.loss(t, { inputs: ids, targets, B, S }, { auxCoef: 0.1 })).loss, names.map((n) => model.p(n)), { maxPerInput: 12 });
    for (const e of r.errors) assert.ok(e.relErr < 1e-6, `${family} d/d${e.name}: relative error ${e.relErr.toExponential(2)}`);
  });
}

test('mixtral: AdamW steps on a repeated batch lower the loss; the trained weights still run in the inference engine', async () => {
  const m = tiny('mixtral');
  const model = new TrainableModel(m.config, m.weights);
  const B = 2, S = 8;
  const batch = { inputs: tokens(B * S, 64, 4), targets: tokens(B * S, 64, 5), B, S };
  const tr = new Trainer(new AdamW(model.parameters(), { lr: 3e-3 }), { clip: 1 });
  const losses: number[] = [];
  for (let s = 0; s < 6; s++) losses.push((await tr.microStep(async (t) => (await model.loss(t, batch, { auxCoef: 0.01 })).loss)).loss);
  for (let s = 1; s < losses.length; s++) assert.ok(losses[s] < losses[s - 1], `loss went up at step ${s}: ${losses.map((x) => x.toFixed(4)).join(' ')}`);
  assert.ok(losses[5] < 0.9 * losses[0], `loss ${losses[0]} -> ${losses[5]}`);
  // the trained parameters, handed back as canonical weights, give the same logits in the engine
  const ref = await new Transformer(m.config, model.toWeights()).logits(batch.inputs, B, S);
  assertClose((await model.forward(new Tape({ grad: false }), batch.inputs, B, S)).logits.data, ref, 1e-5, 'after training');
  assert.notDeepEqual(model.p('embed').data, m.weights.get('embed').data, 'the loaded weights were copied, not trained in place');
});
