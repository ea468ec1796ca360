//! Verifier clamps: bounds the kernel verifier can see.
//!
//! LLVM drops a mask or comparison it can prove redundant, and then the verifier, which tracks
//! less than LLVM knows (byte swaps, values derived from other registers), rejects the access.
//! These helpers emit the bound as an instruction LLVM cannot remove, so every variable-length
//! access states its range at the point of use. They change no in-range value.

use core::arch::asm;

/// `v & MASK`, kept as an instruction. For indexes into fixed-size arrays.
#[inline(always)]
pub fn mask<const MASK: u32>(v: u32) -> u32 {
    let mut r = u64::from(v);
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("{r} &= {m}", r = inout(reg) r, m = const MASK, options(pure, nomem, nostack));
    }
    r as u32
}

/// A length in `1..=MAX` for a value the caller knows is in that range (`MAX` a power of two):
/// `((v - 1) & (MAX - 1)) + 1`, which the verifier bounds by construction. Out-of-range values
/// wrap instead of overflowing the destination; callers check the range first.
#[inline(always)]
pub fn len_1_to<const MAX: u32>(v: u32) -> u32 {
    mask_dyn(v.wrapping_sub(1), MAX - 1) + 1
}

#[inline(always)]
fn mask_dyn(v: u32, m: u32) -> u32 {
    let mut r = u64::from(v);
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("{r} &= {m}", r = inout(reg) r, m = in(reg) u64::from(m), options(pure, nomem, nostack));
    }
    r as u32
}
