/**
 * Activation statistics of the routed experts on calibration text (issue 5). Collected once by
 * running the *original* model over calibration windows (collect.ts), stored next to nothing (a
 * cache file the caller may keep), and read by calibration-aware compression: GPTQ-style
 * error-compensated quantization (gptq.ts), activation-whitened low rank (whiten.ts), and the
 * `auto` method's sensitivity-weighted bit allocation.
 *
 * The expert's inputs are the hidden states after the layer's ffn_norm, for the tokens the router
 * sends to it (top-K of the original model, plain count, not weighted by the routing weight).
 */
export interface ExpertCalib {
  /** Tokens routed to this expert. 0 means the calibration never reached it (see `uncalibrated`). */
  tokens: number;
  /** Σ over those tokens of routing weight², how strongly this expert's output error reaches the residual stream. */
  weightSq: number;
  /** Σ x xᵀ of the expert's input x (gate/up input), [H, H] row-major. */
  xtx: Float64Array;
  /** Σ a aᵀ of the down projection's input a = act(gate x) ⊙ (up x), [I, I] row-major; null when I > maxFullI (then only ataDiag). */
  ata: Float64Array | null;
  /** diag(Σ a aᵀ), [I]. */
  ataDiag: Float64Array;
}

export interface LayerCalib {
  layer: number;
  E: number;
  I: number;
  H: number;
  /** Tokens that passed through the layer (each routed to K experts). */
  tokens: number;
  experts: ExpertCalib[];
}

export interface Calibration {
  /** The calibration text file (as given). */
  source: string;
  windows: number;
  windowSize: number;
  seed: number;
  layers: Map<number, LayerCalib>;
}
