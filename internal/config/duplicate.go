package config

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"unicode/utf16"
)

// duplicateKey returns a key that the configuration's dictionary holds more
// than once, or "". howett.net/plist keeps the last of two equal keys
// without saying so, and a file that says "Data Rate" twice was edited by
// two people with two intentions: which one asr would follow cannot be told.
//
// XML plists (written by hand, where this happens) are checked at every
// level; binary plists at their top dictionary, which holds every key asr
// reads. OpenStep text plists are not checked.
func duplicateKey(b []byte) string {
	if bytes.HasPrefix(b, []byte("bplist")) {
		return duplicateBinary(b)
	}
	return duplicateXML(b)
}

// duplicateXML walks an XML plist's tokens. A document the XML decoder
// cannot read is left to the plist parser to report.
func duplicateXML(b []byte) string {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = false
	var dicts []map[string]bool // one per open <dict>
	inKey := false
	var key bytes.Buffer
	for {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "dict":
				dicts = append(dicts, map[string]bool{})
			case "key":
				inKey = len(dicts) > 0
				key.Reset()
			}
		case xml.CharData:
			if inKey {
				key.Write(t)
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "dict":
				if len(dicts) > 0 {
					dicts = dicts[:len(dicts)-1]
				}
			case "key":
				if inKey {
					top := dicts[len(dicts)-1]
					if top[key.String()] {
						return key.String()
					}
					top[key.String()] = true
					inKey = false
				}
			}
		}
	}
}

// duplicateBinary reads the top dictionary of a binary plist (bplist00):
// its trailer, its offset table and its keys, every read bounds-checked.
// Anything it cannot read is left to the plist parser to report.
func duplicateBinary(b []byte) string {
	if len(b) < 8+32 {
		return ""
	}
	tr := b[len(b)-32:]
	offSize, refSize := int(tr[6]), int(tr[7])
	numObjects := binary.BigEndian.Uint64(tr[8:])
	top := binary.BigEndian.Uint64(tr[16:])
	table := binary.BigEndian.Uint64(tr[24:])
	if offSize < 1 || offSize > 8 || refSize < 1 || refSize > 8 || top >= numObjects ||
		numObjects > uint64(len(b)) || table > uint64(len(b)) {
		return ""
	}
	object := func(i uint64) ([]byte, bool) {
		if i >= numObjects {
			return nil, false
		}
		at := table + i*uint64(offSize)
		if at+uint64(offSize) > uint64(len(b)) {
			return nil, false
		}
		off, _ := readUint(b[at : at+uint64(offSize)])
		if off >= uint64(len(b)) {
			return nil, false
		}
		return b[off:], true
	}
	dict, ok := object(top)
	if !ok || dict[0]>>4 != 0xD {
		return ""
	}
	n, rest, ok := count(dict)
	if !ok || n > uint64(len(rest))/uint64(refSize) {
		return ""
	}
	seen := map[string]bool{}
	for i := range n {
		ref, _ := readUint(rest[i*uint64(refSize) : (i+1)*uint64(refSize)])
		o, ok := object(ref)
		if !ok {
			return ""
		}
		k, ok := bplistString(o)
		if !ok {
			return ""
		}
		if seen[k] {
			return k
		}
		seen[k] = true
	}
	return ""
}

// count reads an object's length: the marker's low nibble, or an integer
// object after it when that nibble is 0xF.
func count(o []byte) (n uint64, rest []byte, ok bool) {
	if len(o) == 0 {
		return 0, nil, false
	}
	if n := o[0] & 0xF; n != 0xF {
		return uint64(n), o[1:], true
	}
	if len(o) < 2 || o[1]>>4 != 0x1 {
		return 0, nil, false
	}
	size := 1 << (o[1] & 0xF)
	if size > 8 || len(o) < 2+size {
		return 0, nil, false
	}
	n, _ = readUint(o[2 : 2+size])
	return n, o[2+size:], true
}

// bplistString decodes an ASCII (0x5) or UTF-16 (0x6) string object.
func bplistString(o []byte) (string, bool) {
	n, rest, ok := count(o)
	if !ok {
		return "", false
	}
	switch o[0] >> 4 {
	case 0x5:
		if n > uint64(len(rest)) {
			return "", false
		}
		return string(rest[:n]), true
	case 0x6:
		if n > uint64(len(rest))/2 {
			return "", false
		}
		u := make([]uint16, n)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(rest[2*i:])
		}
		return string(utf16.Decode(u)), true
	}
	return "", false
}

// readUint reads a big-endian unsigned integer of 1 to 8 bytes.
func readUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 8 {
		return 0, errors.New("bad integer size")
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}
