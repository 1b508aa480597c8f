//! Go's `slices.SortFunc` (pattern-defeating quicksort, Go 1.26), step for
//! step, because it is not stable: Go's parser sorts batch cursors and CPU
//! samples by time with it, and which of two equal times comes first decides
//! the order of the events it yields.

/// Sorts `v` exactly as Go's `slices.SortFunc(v, cmp)` does, where
/// `less(a, b)` is Go's `cmp(a, b) < 0`.
pub(crate) fn sort_func<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let n = v.len();
    let limit = usize::BITS - n.leading_zeros();
    pdqsort(v, 0, n, limit as usize, &mut less);
}

fn insertion_sort<T>(v: &mut [T], a: usize, b: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn sift_down<T>(v: &mut [T], lo: usize, hi: usize, first: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    let mut root = lo;
    loop {
        let mut child = 2 * root + 1;
        if child >= hi {
            return;
        }
        if child + 1 < hi && less(&v[first + child], &v[first + child + 1]) {
            child += 1;
        }
        if !less(&v[first + root], &v[first + child]) {
            return;
        }
        v.swap(first + root, first + child);
        root = child;
    }
}

fn heap_sort<T>(v: &mut [T], a: usize, b: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    // Only called on more than 12 elements.
    let first = a;
    let hi = b - a;
    for i in (0..=(hi - 1) / 2).rev() {
        sift_down(v, i, hi, first, less);
    }
    for i in (0..hi).rev() {
        v.swap(first, first + i);
        sift_down(v, 0, i, first, less);
    }
}

#[derive(PartialEq)]
enum Hint {
    Unknown,
    Increasing,
    Decreasing,
}

fn pdqsort<T>(
    v: &mut [T],
    mut a: usize,
    mut b: usize,
    mut limit: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    const MAX_INSERTION: usize = 12;
    let mut was_balanced = true;
    let mut was_partitioned = true;
    loop {
        let length = b - a;
        if length <= MAX_INSERTION {
            insertion_sort(v, a, b, less);
            return;
        }
        if limit == 0 {
            heap_sort(v, a, b, less);
            return;
        }
        if !was_balanced {
            break_patterns(v, a, b);
            limit -= 1;
        }
        let (mut pivot, mut hint) = choose_pivot(v, a, b, less);
        if hint == Hint::Decreasing {
            v[a..b].reverse();
            pivot = (b - 1) - (pivot - a);
            hint = Hint::Increasing;
        }
        if was_balanced
            && was_partitioned
            && hint == Hint::Increasing
            && partial_insertion_sort(v, a, b, less)
        {
            return;
        }
        if a > 0 && !less(&v[a - 1], &v[pivot]) {
            a = partition_equal(v, a, b, pivot, less);
            continue;
        }
        let (mid, already) = partition(v, a, b, pivot, less);
        was_partitioned = already;
        let (left, right) = (mid - a, b - mid);
        let balance = length / 8;
        if left < right {
            was_balanced = left >= balance;
            pdqsort(v, a, mid, limit, less);
            a = mid + 1;
        } else {
            was_balanced = right >= balance;
            pdqsort(v, mid + 1, b, limit, less);
            b = mid;
        }
    }
}

fn partition<T>(
    v: &mut [T],
    a: usize,
    b: usize,
    pivot: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> (usize, bool) {
    v.swap(a, pivot);
    // Go's i and j are inclusive bounds and j may reach a (never below it).
    let (mut i, mut j) = (a + 1, b - 1);
    while i <= j && less(&v[i], &v[a]) {
        i += 1;
    }
    while i <= j && !less(&v[j], &v[a]) {
        j -= 1;
    }
    if i > j {
        v.swap(j, a);
        return (j, true);
    }
    v.swap(i, j);
    i += 1;
    j -= 1;
    loop {
        while i <= j && less(&v[i], &v[a]) {
            i += 1;
        }
        while i <= j && !less(&v[j], &v[a]) {
            j -= 1;
        }
        if i > j {
            break;
        }
        v.swap(i, j);
        i += 1;
        j -= 1;
    }
    v.swap(j, a);
    (j, false)
}

fn partition_equal<T>(
    v: &mut [T],
    a: usize,
    b: usize,
    pivot: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    v.swap(a, pivot);
    let (mut i, mut j) = (a + 1, b - 1);
    loop {
        while i <= j && !less(&v[a], &v[i]) {
            i += 1;
        }
        while i <= j && less(&v[a], &v[j]) {
            j -= 1;
        }
        if i > j {
            return i;
        }
        v.swap(i, j);
        i += 1;
        j -= 1;
    }
}

fn partial_insertion_sort<T>(v: &mut [T], a: usize, b: usize, less: &mut impl FnMut(&T, &T) -> bool) -> bool {
    const MAX_STEPS: usize = 5;
    const SHORTEST_SHIFTING: usize = 50;
    let mut i = a + 1;
    for _ in 0..MAX_STEPS {
        while i < b && !less(&v[i], &v[i - 1]) {
            i += 1;
        }
        if i == b {
            return true;
        }
        if b - a < SHORTEST_SHIFTING {
            return false;
        }
        v.swap(i, i - 1);
        if i - a >= 2 {
            // Go's loop runs down to index 1, not to a + 1.
            let mut j = i - 1;
            while j >= 1 {
                if !less(&v[j], &v[j - 1]) {
                    break;
                }
                v.swap(j, j - 1);
                j -= 1;
            }
        }
        if b - i >= 2 {
            for j in i + 1..b {
                if !less(&v[j], &v[j - 1]) {
                    break;
                }
                v.swap(j, j - 1);
            }
        }
    }
    false
}

fn break_patterns<T>(v: &mut [T], a: usize, b: usize) {
    let length = b - a;
    if length >= 8 {
        let mut random = length as u64;
        let modulus = 1usize << (usize::BITS - length.leading_zeros());
        let mid = a + (length / 4) * 2;
        for idx in mid - 1..=mid + 1 {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let mut other = (random as usize) & (modulus - 1);
            if other >= length {
                other -= length;
            }
            v.swap(idx, a + other);
        }
    }
}

fn choose_pivot<T>(v: &mut [T], a: usize, b: usize, less: &mut impl FnMut(&T, &T) -> bool) -> (usize, Hint) {
    const SHORTEST_NINTHER: usize = 50;
    const MAX_SWAPS: usize = 4 * 3;
    let l = b - a;
    let mut swaps = 0;
    let mut i = a + l / 4;
    let mut j = a + l / 4 * 2;
    let mut k = a + l / 4 * 3;
    if l >= 8 {
        if l >= SHORTEST_NINTHER {
            i = median(v, i - 1, i, i + 1, &mut swaps, less);
            j = median(v, j - 1, j, j + 1, &mut swaps, less);
            k = median(v, k - 1, k, k + 1, &mut swaps, less);
        }
        j = median(v, i, j, k, &mut swaps, less);
    }
    match swaps {
        0 => (j, Hint::Increasing),
        MAX_SWAPS => (j, Hint::Decreasing),
        _ => (j, Hint::Unknown),
    }
}

fn order2<T>(
    v: &[T],
    a: usize,
    b: usize,
    swaps: &mut usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> (usize, usize) {
    if less(&v[b], &v[a]) {
        *swaps += 1;
        (b, a)
    } else {
        (a, b)
    }
}

fn median<T>(
    v: &[T],
    a: usize,
    b: usize,
    c: usize,
    swaps: &mut usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    let (a, b) = order2(v, a, b, swaps, less);
    let (b, _) = order2(v, b, c, swaps, less);
    let (_, b) = order2(v, a, b, swaps, less);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_indices(keys: &[u32]) -> Vec<usize> {
        let mut v: Vec<(u32, usize)> = keys.iter().copied().zip(0..).collect();
        sort_func(&mut v, |a, b| a.0 < b.0);
        v.into_iter().map(|(_, i)| i).collect()
    }

    #[test]
    fn sorts_every_size_and_shape() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..600 {
            for modulo in [1, 2, 3, 7, 1000] {
                let mut v: Vec<u64> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % modulo
                    })
                    .collect();
                let mut want = v.clone();
                want.sort();
                sort_func(&mut v, |a, b| a < b);
                assert_eq!(v, want, "n {n} mod {modulo}");
            }
            let mut down: Vec<usize> = (0..n).rev().collect();
            sort_func(&mut down, |a, b| a < b);
            assert!(down.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    /// Order after sorting (key, index) pairs by key only: equal keys
    /// land where Go 1.26.8's `slices.SortFunc` puts them. The expected
    /// orders were printed by Go for the same keys, sorting
    /// `[]struct{k, i int}` with `func(a, b) int { return a.k - b.k }`.
    #[test]
    fn equal_keys_land_where_go_puts_them() {
        let forty: Vec<u32> = (0..40u32).map(|i| (i * 7919) % 5).collect();
        assert_eq!(
            sorted_indices(&forty),
            [
                20, 10, 35, 30, 0, 5, 25, 15, 14, 24, 39, 34, 9, 29, 19, 4, 3, 28, 8, 18, 38, 33, 13, 23, 27,
                32, 37, 17, 2, 22, 12, 7, 31, 21, 11, 16, 36, 26, 6, 1
            ]
        );
        let thirteen: Vec<u32> = (0..13u32).rev().map(|i| i % 2).collect();
        assert_eq!(
            sorted_indices(&thirteen),
            [8, 12, 2, 0, 4, 10, 6, 3, 7, 9, 5, 11, 1]
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let many: Vec<u32> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 4) as u32
            })
            .collect();
        assert_eq!(sorted_indices(&many), GO_300_MOD_4);
    }

    const GO_300_MOD_4: [usize; 300] = [
        61, 4, 219, 208, 199, 196, 188, 229, 182, 179, 177, 294, 174, 172, 171, 292, 16, 235, 163, 236, 217,
        239, 152, 3, 146, 25, 286, 143, 135, 245, 250, 252, 254, 33, 127, 121, 114, 255, 280, 39, 108, 263,
        103, 43, 264, 94, 91, 87, 79, 49, 77, 272, 74, 73, 54, 274, 237, 12, 277, 218, 276, 213, 212, 63,
        211, 65, 0, 67, 68, 5, 70, 71, 204, 203, 202, 51, 201, 200, 10, 48, 224, 197, 82, 194, 193, 85, 86,
        47, 192, 269, 228, 46, 189, 187, 185, 181, 176, 267, 57, 173, 265, 279, 102, 42, 104, 170, 106, 166,
        17, 260, 110, 291, 19, 37, 161, 20, 116, 117, 118, 158, 120, 289, 122, 240, 241, 125, 126, 34, 149,
        31, 148, 147, 283, 247, 29, 28, 24, 137, 138, 139, 244, 295, 93, 285, 140, 145, 136, 131, 130, 32,
        23, 141, 22, 123, 35, 155, 238, 157, 119, 159, 115, 36, 258, 111, 164, 40, 262, 167, 234, 231, 41,
        293, 13, 99, 266, 299, 268, 124, 142, 175, 230, 95, 9, 183, 184, 45, 7, 178, 2, 92, 90, 191, 88, 84,
        83, 195, 1, 270, 80, 78, 278, 271, 52, 53, 72, 223, 206, 222, 69, 220, 66, 55, 275, 56, 59, 150, 216,
        215, 214, 210, 209, 221, 207, 205, 198, 225, 226, 227, 190, 186, 180, 169, 232, 233, 168, 165, 162,
        160, 156, 154, 153, 151, 242, 243, 144, 134, 246, 133, 248, 249, 132, 251, 129, 253, 128, 113, 256,
        257, 112, 259, 109, 261, 107, 105, 101, 100, 98, 97, 96, 89, 81, 76, 75, 273, 64, 62, 60, 58, 50, 44,
        38, 281, 282, 30, 284, 27, 26, 287, 288, 21, 290, 18, 15, 14, 11, 8, 296, 297, 298, 6,
    ];
}
