// AudioWorklet processor of the softphone (docs/console.md, "Softphone"): microphone samples at the
// context rate (16 kHz) -> 20 ms frames posted to the page, which sends them: one tag byte 0x01
// (audio, see service/providers/browser/dialect.py) then PCM16 little-endian samples.
"use strict";
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.filled = 0;
    this.fresh();
  }
  fresh() {
    this.buffer = new ArrayBuffer(1 + 640); // tag + 20 ms at 16 kHz
    this.view = new DataView(this.buffer);
    this.view.setUint8(0, 1);
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.view.setInt16(1 + 2 * this.filled++, s < 0 ? s * 0x8000 : s * 0x7fff, true);
      if (this.filled === 320) {
        this.port.postMessage(this.buffer, [this.buffer]);
        this.filled = 0;
        this.fresh();
      }
    }
    return true;
  }
}
registerProcessor("capture-processor", CaptureProcessor);
