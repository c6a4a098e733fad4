//! The protobuf wire format, as much of it as the match path needs: a reader
//! that skips unknown fields of every wire type (groups included) the way the
//! protobuf runtime does, and writers for the few response messages.
//!
//! The reader never panics: every read is bounds-checked and malformed input
//! is reported as [`Invalid`].

/// The bytes are not a valid protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Deepest nesting of groups the reader follows (the Python runtime's
/// recursion limit is 100).
const MAX_GROUP_DEPTH: usize = 100;

/// The value of one field as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    /// A fixed-width scalar or a group: skipped, never used by the match path.
    Skipped,
}

/// Reads the fields of one message in wire order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far: where the next field starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, Invalid> {
        // Keys, lengths and enum values are almost always one byte.
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.varint_slow(),
        }
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, Invalid> {
        let mut out = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(Invalid)?;
            self.pos += 1;
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(Invalid)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self.pos.checked_add(n).ok_or(Invalid)?;
        let out = self.buf.get(self.pos..end).ok_or(Invalid)?;
        self.pos = end;
        Ok(out)
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), Invalid> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Invalid)?;
        let number = key >> 3;
        if number == 0 {
            return Err(Invalid);
        }
        Ok((number, (key & 7) as u8))
    }

    /// Skips the rest of group `number` (its start key already read).
    fn skip_group(&mut self, number: u32) -> Result<(), Invalid> {
        // Open groups, innermost last; iterative so depth costs no stack.
        let mut open: Vec<u32> = vec![number];
        while let Some(&inner) = open.last() {
            let (n, wire) = self.key()?;
            match wire {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.skip(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| Invalid)?;
                    self.skip(len)?;
                }
                3 => {
                    if open.len() >= MAX_GROUP_DEPTH {
                        return Err(Invalid);
                    }
                    open.push(n);
                }
                4 if n == inner => {
                    open.pop();
                }
                5 => {
                    self.skip(4)?;
                }
                _ => return Err(Invalid),
            }
        }
        Ok(())
    }

    /// The next field, or `None` at the end of the message.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, Invalid> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let (number, wire) = self.key()?;
        let value = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Skipped
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Invalid)?;
                Value::Len(self.skip(len)?)
            }
            3 => {
                self.skip_group(number)?;
                Value::Skipped
            }
            5 => {
                self.skip(4)?;
                Value::Skipped
            }
            // An end-group key outside a group, or wire types 6 and 7.
            _ => return Err(Invalid),
        };
        Ok(Some((number, value)))
    }
}

/// Bytes of `v` as a varint.
#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (`field` < 16 so its key is one byte).
#[inline]
pub fn put_len(field: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(field << 3 | 2);
    put_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A length-delimited field, omitted when empty (proto3 default).
#[inline]
pub fn put_str(field: u8, body: &[u8], out: &mut Vec<u8>) {
    if !body.is_empty() {
        put_len(field, body, out);
    }
}

/// A varint field, omitted when zero (proto3 default).
#[inline]
pub fn put_uint(field: u8, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        out.push(field << 3);
        put_varint(v, out);
    }
}

/// Bytes of a length-delimited field of `len` body bytes.
#[inline]
pub fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, Invalid> {
        let mut r = Reader::new(buf);
        let mut out = vec![];
        while let Some(f) = r.next()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn varint_sizes() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = vec![];
            put_varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(Reader::new(&out).varint_slow(), Ok(v));
        }
    }

    #[test]
    fn skips_every_wire_type() {
        // field 1 varint 5; field 2 fixed64; field 3 group holding a nested group
        // and a fixed32; field 4 bytes "ab".
        let mut buf = vec![0x08, 5, 0x11];
        buf.extend([0; 8]);
        buf.extend([0x1b, 0x23, 0x08, 1, 0x24, 0x2d, 0, 0, 0, 0, 0x1c]);
        buf.extend([0x22, 2, b'a', b'b']);
        let got = fields(&buf).unwrap();
        assert_eq!(
            got,
            vec![
                (1, Value::Varint(5)),
                (2, Value::Skipped),
                (3, Value::Skipped),
                (4, Value::Len(b"ab"))
            ]
        );
    }

    #[test]
    fn refuses_malformed_wire() {
        assert!(fields(&[0x0a, 5, 1]).is_err(), "truncated bytes");
        assert!(fields(&[0x08]).is_err(), "missing varint");
        assert!(fields(&[0x0c]).is_err(), "end group outside a group");
        assert!(fields(&[0x0b, 0x14]).is_err(), "mismatched end group");
        assert!(fields(&[0x0b]).is_err(), "unterminated group");
        assert!(fields(&[0x0e]).is_err(), "wire type 6");
        assert!(fields(&[0x00, 1]).is_err(), "field number 0");
        let overlong: Vec<u8> = [0x08].into_iter().chain([0xff; 11]).chain([0]).collect();
        assert!(fields(&overlong).is_err(), "overlong varint");
        let deep: Vec<u8> = std::iter::repeat_n(0x0b, 200)
            .chain(std::iter::repeat_n(0x0c, 200))
            .collect();
        assert!(fields(&deep).is_err(), "groups nested too deep");
        let ok: Vec<u8> = std::iter::repeat_n(0x0b, 50)
            .chain(std::iter::repeat_n(0x0c, 50))
            .collect();
        assert!(fields(&ok).is_ok());
    }
}
