//! The AMX kernel: one 32 x 32 block of a bf16 product on tiles, the fastest path a Sapphire
//! Rapids class Xeon has for it (one `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32:
//! 8,192 multiply-adds, where an AVX-512 f32 FMA does 16). Written as inline assembly: Rust's
//! AMX intrinsics are not stable, and the instructions need nothing from the compiler but
//! their operands' addresses.

use std::arch::asm;
use std::marker::PhantomData;

use super::{Block, BlockKernel};

/// Rows of a tile, and f32 columns of an accumulator tile.
pub const TILE: usize = 16;
/// bf16 values along K in one tile row (64 bytes).
pub const TILE_K: usize = 32;
/// Rows and columns of the block one kernel call computes (2 x 2 accumulator tiles).
pub const BLOCK: usize = 2 * TILE;
/// bf16 pairs (`u32`) of one packed B tile.
pub const B_TILE_PAIRS: usize = TILE * TILE;

/// Whether this process may run AMX bf16 tiles: CPUID says the CPU has AMX-BF16 and
/// AMX-TILE, and Linux grants the tile state (asked here, once for the whole process).
pub fn usable() -> bool {
    cpu_has_amx_bf16() && os_grants_tiles()
}

fn cpu_has_amx_bf16() -> bool {
    // Leaf 7 is read only when the CPU reports it.
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    // EDX bit 22: AMX-BF16, bit 24: AMX-TILE.
    leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0
}

fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it changes only whether this
    // process may use the tile state, which nothing else here touches.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// The tile configuration (palette 1): tmm0-7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// The tiles configured on this thread; released on drop. Not `Send`: the configuration is
/// the thread's.
pub struct Tiles(PhantomData<*const ()>);

impl Tiles {
    /// Configures this thread's tiles. Panics when they are not this process's kernel (a
    /// caller's bug: without the permission the first tile instruction faults).
    pub fn load() -> Self {
        assert!(
            super::kernel() == Some(super::Kernel::Tiles),
            "AMX tiles used without permission"
        );
        let mut config = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            config.bytes_per_row[t] = (TILE_K * 2) as u16;
            config.rows[t] = TILE as u8;
        }
        // SAFETY: the configuration is valid for palette 1 and the process holds the
        // permission (checked above).
        unsafe { asm!("ldtilecfg [{0}]", in(reg) &config, options(nostack, readonly)) };
        Tiles(PhantomData)
    }
}

impl BlockKernel for Tiles {
    unsafe fn block(
        &self,
        Block {
            a,
            a_stride,
            b,
            k_chunks,
            c,
            c_stride,
            accumulate,
        }: Block,
    ) {
        // SAFETY: the caller vouches for the addresses; tmm0-7 are configured by `load`, and
        // no other code on this thread uses them.
        unsafe {
            let a_bytes = a_stride * 2;
            let a_low = a.add(TILE * a_stride);
            let c_bytes = c_stride * 4;
            // The four accumulator tiles' corners: rows 0-15 and 16-31, columns 0-15 and 16-31.
            let [c0, c1, c2, c3] = [
                c,
                c.add(TILE),
                c.add(TILE * c_stride),
                c.add(TILE * c_stride + TILE),
            ];
            if accumulate {
                asm!(
                    "tileloadd tmm0, [{c0} + {sc}*1]",
                    "tileloadd tmm1, [{c1} + {sc}*1]",
                    "tileloadd tmm2, [{c2} + {sc}*1]",
                    "tileloadd tmm3, [{c3} + {sc}*1]",
                    c0 = in(reg) c0,
                    c1 = in(reg) c1,
                    c2 = in(reg) c2,
                    c3 = in(reg) c3,
                    sc = in(reg) c_bytes,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
            for kc in 0..k_chunks {
                let a_hi = a.add(kc * TILE_K);
                let a_lo = a_low.add(kc * TILE_K);
                let b0 = b.add(kc * 2 * B_TILE_PAIRS);
                let b1 = b0.add(B_TILE_PAIRS);
                asm!(
                    "tileloadd tmm4, [{a_hi} + {sa}*1]",
                    "tileloadd tmm5, [{a_lo} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a_hi = in(reg) a_hi,
                    a_lo = in(reg) a_lo,
                    b0 = in(reg) b0,
                    b1 = in(reg) b1,
                    sa = in(reg) a_bytes,
                    sb = in(reg) TILE_K * 2,
                    options(nostack, readonly)
                );
            }
            asm!(
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c1} + {sc}*1], tmm1",
                "tilestored [{c2} + {sc}*1], tmm2",
                "tilestored [{c3} + {sc}*1], tmm3",
                c0 = in(reg) c0,
                c1 = in(reg) c1,
                c2 = in(reg) c2,
                c3 = in(reg) c3,
                sc = in(reg) c_bytes,
                options(nostack)
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: returns the tile state to its initial one; always valid.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
