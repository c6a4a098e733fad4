//! Run-time CPU dispatch.
//!
//! Hot loops are written once as `#[inline(always)]` generic code and
//! instantiated inside wrappers compiled with `#[target_feature]`, so the
//! compiler emits hardware `popcnt` (and, where it vectorises, AVX2 /
//! AVX-512 VPOPCNTDQ) in them. [`Level`] is detected once; the wheel still runs
//! on CPUs without these features through the portable instantiation.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Instruction-set level used for the hot loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code (software popcount on baseline x86-64).
    Portable = 1,
    /// `popcnt`.
    Popcnt = 2,
    /// `popcnt` + AVX2 (+ BMI).
    Avx2 = 3,
    /// AVX-512F/BW/VL + VPOPCNTDQ.
    Avx512 = 4,
}

static FORCED: AtomicU8 = AtomicU8::new(0);

impl Level {
    /// The best level this CPU supports (detected once).
    pub fn detect() -> Level {
        static DETECTED: OnceLock<Level> = OnceLock::new();
        *DETECTED.get_or_init(Level::detect_uncached)
    }

    /// `self`, lowered to what this CPU supports.
    #[inline]
    pub fn clamp_to_cpu(self) -> Level {
        self.min(Level::detect())
    }

    fn detect_uncached() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
                && std::arch::is_x86_feature_detected!("bmi1")
                && std::arch::is_x86_feature_detected!("bmi2")
            {
                return Level::Avx2;
            }
            if std::arch::is_x86_feature_detected!("popcnt") {
                return Level::Popcnt;
            }
        }
        Level::Portable
    }

    /// Every level usable on this CPU, lowest first (for tests and benchmarks).
    pub fn available() -> Vec<Level> {
        let best = Level::detect();
        [Level::Portable, Level::Popcnt, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|l| *l <= best)
            .collect()
    }

    /// The level in use: detected, unless lowered with [`Level::force`].
    pub fn current() -> Level {
        let best = Level::detect();
        match FORCED.load(Ordering::Relaxed) {
            1 => Level::Portable,
            2 => Level::Popcnt.min(best),
            3 => Level::Avx2.min(best),
            _ => best,
        }
    }

    /// Lowers the level used from now on (benchmarks); `None` restores detection.
    /// A level above what the CPU supports is clamped to it.
    pub fn force(level: Option<Level>) {
        FORCED.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
    }
}

/// Instantiates `$body` once per level: `dispatch!(level, (name: Type = value, …) -> Ret { body })`.
///
/// Expands to a `match` on `$level` whose arms call the body inside a function
/// compiled with the matching `#[target_feature]`.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($level:expr, ($($arg:ident : $ty:ty = $val:expr),* $(,)?) -> $ret:ty $body:block) => {{
        #[inline(always)]
        fn portable($($arg: $ty),*) -> $ret $body

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "popcnt")]
        fn popcnt($($arg: $ty),*) -> $ret $body

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "popcnt,avx2,bmi1,bmi2")]
        fn avx2($($arg: $ty),*) -> $ret $body

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "popcnt,avx2,bmi1,bmi2,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
        fn avx512($($arg: $ty),*) -> $ret $body

        match $crate::simd::Level::clamp_to_cpu($level) {
            // SAFETY (all three arms): the level was clamped to
            // `Level::detect()`, so `is_x86_feature_detected!` confirmed every
            // feature enabled on the called function.
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Level::Avx512 => unsafe { avx512($($val),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Level::Avx2 => unsafe { avx2($($val),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::simd::Level::Popcnt => unsafe { popcnt($($val),*) },
            _ => portable($($val),*),
        }
    }};
}
