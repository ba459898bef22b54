// emu.cpp: the fibers, barriers and launches of emu.h.
#include "emu.h"
Fiber* emu_cur;
dim3e emu_bid, emu_bdim, emu_gdim;
unsigned char* emu_smem;
Bar emu_blockbar;
Bar emu_warpbar[32];
float emu_xch[32][32];
unsigned emu_mma[32][32][3];
static ucontext_t sched;
static std::vector<Fiber> fibers;
static std::function<void()> kfn;
unsigned short f2h(float f) {
  unsigned x; memcpy(&x, &f, 4);
  unsigned s = (x >> 16) & 0x8000; float a = std::fabs(f);
  if (std::isnan(f)) return s | 0x7e00;
  if (a >= 65520.f) return s | 0x7c00;
  if (a < std::ldexp(1.f, -14)) { // subnormal: units of 2^-24
    float q = std::nearbyintf(a * 16777216.f); return s | (unsigned)q; }
  int e; float m = std::frexp(a, &e); // a = m*2^e, m in [0.5,1)
  float q = std::nearbyintf(m * 2048.f); // 11 bits
  if (q == 2048.f) { q = 1024.f; e++; }
  unsigned he = e - 1 + 15, hm = (unsigned)q - 1024;
  if (he >= 31) return s | 0x7c00;
  return s | (he << 10) | hm;
}
void emu_yield() { swapcontext(&emu_cur->ctx, &sched); }
void emu_bar_wait(Bar& b) {
  int g = b.gen;
  if (++b.count >= b.n) { b.count = 0; b.gen++; return; }
  while (b.gen == g) emu_yield();
}
static void drop(Bar& b) { b.n--; if (b.count >= b.n && b.n > 0 && b.count > 0) { b.count = 0; b.gen++; } }
static void trampoline() {
  kfn();
  emu_cur->done = true;
  drop(emu_blockbar);
  drop(emu_warpbar[emu_cur->warp]);
  swapcontext(&emu_cur->ctx, &sched);
}
void emu_launch(dim3e grid, int block, size_t smem, std::function<void()> f) {
  kfn = f;
  std::vector<unsigned char> sm(smem + 16);
  emu_smem = sm.data();
  emu_gdim = grid; emu_bdim = {(unsigned)block, 1, 1};
  fibers.resize(block);
  for (auto& fb : fibers) if (fb.stack.empty()) fb.stack.resize(1 << 18);
  for (unsigned z = 0; z < grid.z; z++) for (unsigned y = 0; y < grid.y; y++) for (unsigned x = 0; x < grid.x; x++) {
    emu_bid = {x, y, z};
    memset(sm.data(), 0xA5, sm.size()); // poison
    emu_blockbar = Bar{block, 0, 0};
    for (int w = 0; w < 32; w++) emu_warpbar[w] = Bar{w < block / 32 ? 32 : 0, 0, 0};
    for (int i = 0; i < block; i++) {
      Fiber& fb = fibers[i];
      fb.tid = {(unsigned)i, 0, 0}; fb.warp = i / 32; fb.done = false;
      getcontext(&fb.ctx); fb.ctx.uc_stack.ss_sp = fb.stack.data(); fb.ctx.uc_stack.ss_size = fb.stack.size(); fb.ctx.uc_link = &sched;
      makecontext(&fb.ctx, trampoline, 0);
    }
    for (bool live = true; live;) {
      live = false;
      for (int i = 0; i < block; i++) {
        if (fibers[i].done) continue;
        live = true; emu_cur = &fibers[i];
        swapcontext(&sched, &fibers[i].ctx);
      }
    }
  }
}
