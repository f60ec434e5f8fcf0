/**
 * An independent float64 reference forward, token by token, written from the transformers
 * definitions and sharing no code with src/runtime. Covers: RMSNorm, QK-norm (full/head),
 * GQA with biases, default RoPE (half), sliding window, softmax-topk / topk-softmax routing,
 * shared experts with sigmoid gate, dense FFN layers, tied embeddings.
 */
export interface RefConfig {
  V: number;
  H: number;
  L: number;
  NH: number;
  NKV: number;
  D: number;
  eps: number;
  theta: number;
  qkNorm: 'none' | 'head' | 'full';
  moeLayers: boolean[];
  E: number;
  K: number;
  normTopK: boolean;
  routing: 'softmax-topk' | 'topk-softmax';
  sharedGated: boolean | null; // null: no shared expert
  window: number | null;
}

export type RefWeights = Map<string, { shape: number[]; data: Float32Array }>;

const dot = (a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, n: number) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i] * b[bo + i];
  return s;
};

/** y = W x (+ b), W: [out, in] */
function mv(W: Float32Array, x: number[], out: number, b?: Float32Array): number[] {
  const n = x.length;
  const y: number[] = [];
  for (let o = 0; o < out; o++) y.push(dot(W, o * n, x, 0, n) + (b ? b[o] : 0));
  return y;
}

function rms(x: number[], w: ArrayLike<number>, eps: number): number[] {
  const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]);
}

function rope(x: number[], pos: number, theta: number): number[] {
  const d = x.length;
  const out = x.slice();
  for (let i = 0; i < d / 2; i++) {
    const f = pos / Math.pow(theta, (2 * i) / d);
    out[i] = x[i] * Math.cos(f) - x[i + d / 2] * Math.sin(f);
    out[i + d / 2] = x[i + d / 2] * Math.cos(f) + x[i] * Math.sin(f);
  }
  return out;
}

const silu = (v: number) => v / (1 + Math.exp(-v));

function ffn(gate: Float32Array, up: Float32Array, down: Float32Array, F: number, x: number[]): number[] {
  const g = mv(gate, x, F);
  const u = mv(up, x, F);
  return mv(down, g.map((v, i) => silu(v) * u[i]), x.length);
}

/** tokens: one sequence -> logits [S][V] in float64. */
export function referenceForward(c: RefConfig, w: RefWeights, tokens: number[]): number[][] {
  const g = (n: string) => w.get(n)?.data;
  const req = (n: string) => {
    const t = g(n);
    if (!t) throw new Error(`reference: missing ${n}`);
    return t;
  };
  const { H, D, NH, NKV } = c;
  const embed = req('embed');
  let xs = tokens.map((t) => Array.from(embed.subarray(t * H, (t + 1) * H)));
  for (let l = 0; l < c.L; l++) {
    const p = `layers.${l}.`;
    const ks: number[][][] = [];
    const vs: number[][][] = [];
    const qs: number[][][] = [];
    for (let s = 0; s < xs.length; s++) {
      const h = rms(xs[s], req(p + 'attn_norm.weight'), c.eps);
      let q = mv(req(p + 'attn.q.weight'), h, NH * D, g(p + 'attn.q.bias'));
      let k = mv(req(p + 'attn.k.weight'), h, NKV * D, g(p + 'attn.k.bias'));
      const v = mv(req(p + 'attn.v.weight'), h, NKV * D, g(p + 'attn.v.bias'));
      if (c.qkNorm === 'full') {
        q = rms(q, req(p + 'attn.q_norm.weight'), c.eps);
        k = rms(k, req(p + 'attn.k_norm.weight'), c.eps);
      }
      const heads = (x: number[], n: number) => Array.from({ length: n }, (_, i) => x.slice(i * D, (i + 1) * D));
      let qh = heads(q, NH);
      let kh = heads(k, NKV);
      if (c.qkNorm === 'head') {
        qh = qh.map((x) => rms(x, req(p + 'attn.q_norm.weight'), c.eps));
        kh = kh.map((x) => rms(x, req(p + 'attn.k_norm.weight'), c.eps));
      }
      qs.push(qh.map((x) => rope(x, s, c.theta)));
      ks.push(kh.map((x) => rope(x, s, c.theta)));
      vs.push(heads(v, NKV));
    }
    const next: number[][] = [];
    for (let s = 0; s < xs.length; s++) {
      const att: number[] = [];
      for (let hh = 0; hh < NH; hh++) {
        const kv = Math.floor(hh / (NH / NKV));
        const js = [...Array(s + 1).keys()].filter((j) => c.window === null || s - j < c.window);
        const sc = js.map((j) => dot(qs[s][hh], 0, ks[j][kv], 0, D) / Math.sqrt(D));
        const m = Math.max(...sc);
        const e = sc.map((v) => Math.exp(v - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) att.push(js.reduce((a, j, i) => a + (e[i] / z) * vs[j][kv][d], 0));
      }
      const o = mv(req(p + 'attn.o.weight'), att, H, g(p + 'attn.o.bias'));
      const x = xs[s].map((v, i) => v + o[i]);
      const h = rms(x, req(p + 'ffn_norm.weight'), c.eps);
      let f: number[];
      if (c.moeLayers[l]) {
        const logits = mv(req(p + 'moe.router.weight'), h, c.E);
        const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a] || a - b).slice(0, c.K);
        let wts: number[];
        if (c.routing === 'topk-softmax') {
          const e = order.map((i) => Math.exp(logits[i] - logits[order[0]]));
          wts = e.map((v) => v / e.reduce((a, b) => a + b, 0));
        } else {
          const m = Math.max(...logits);
          const z = logits.reduce((a, v) => a + Math.exp(v - m), 0);
          wts = order.map((i) => Math.exp(logits[i] - m) / z);
          if (c.normTopK) {
            const t = wts.reduce((a, b) => a + b, 0);
            wts = wts.map((v) => v / t);
          }
        }
        f = new Array(H).fill(0);
        const G = req(p + 'moe.experts.gate');
        const U = req(p + 'moe.experts.up');
        const Dn = req(p + 'moe.experts.down');
        const I = w.get(p + 'moe.experts.gate')!.shape[1];
        order.forEach((e, i) => {
          const y = ffn(G.subarray(e * I * H, (e + 1) * I * H), U.subarray(e * I * H, (e + 1) * I * H), Dn.subarray(e * I * H, (e + 1) * I * H), I, h);
          for (let j = 0; j < H; j++) f[j] += wts[i] * y[j];
        });
        if (c.sharedGated !== null) {
          const IS = w.get(p + 'moe.shared.gate')!.shape[0];
          const y = ffn(req(p + 'moe.shared.gate'), req(p + 'moe.shared.up'), req(p + 'moe.shared.down'), IS, h);
          const sg = c.sharedGated ? 1 / (1 + Math.exp(-dot(req(p + 'moe.shared_gate.weight'), 0, h, 0, H))) : 1;
          for (let j = 0; j < H; j++) f[j] += sg * y[j];
        }
      } else {
        const F = w.get(p + 'mlp.gate')!.shape[0];
        f = ffn(req(p + 'mlp.gate'), req(p + 'mlp.up'), req(p + 'mlp.down'), F, h);
      }
      next.push(x.map((v, i) => v + f[i]));
    }
    xs = next;
  }
  const head = g('lm_head') ?? embed;
  return xs.map((x) => mv(head, rms(x, req('norm.weight'), c.eps), c.V));
}
