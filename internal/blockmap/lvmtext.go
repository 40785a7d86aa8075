package blockmap

import (
	"fmt"
	"strconv"
)

// The LVM2 metadata text is libdevmapper's configuration format (lvm2's
// libdm/libdm-config.c): sections `name { ... }`, assignments `key = value`
// whose value is a string, a number or an array `[ v, v ]` of them, and `#`
// comments. A volume group's metadata is one section named after the group
// beside a few top-level keys (contents, version, description).
//
// The parser reads untrusted bytes from the disk: its input is bounded by
// the caller (maxLVMText), its nesting by maxCfgDepth, and it never
// recurses deeper than that.

const (
	// maxCfgDepth bounds section nesting. A volume group's metadata nests
	// five deep (top, group, logical_volumes, volume, segment).
	maxCfgDepth = 16
	// maxCfgNodes bounds the nodes of one document: a few per segment, and
	// a group has at most a few thousand volumes.
	maxCfgNodes = 1 << 20
)

// cfgValue is a scalar: a string or a number (floats are kept as text,
// since nothing the map needs is one).
type cfgValue struct {
	str   string
	num   int64
	isNum bool
}

// cfgNode is a section or an assignment.
type cfgNode struct {
	key      string
	section  bool
	children []*cfgNode // of a section
	vals     []cfgValue // of an assignment: one, or an array's elements
	array    bool
	line     int
}

// child returns the first child named key, or nil.
func (n *cfgNode) child(key string) *cfgNode {
	for _, c := range n.children {
		if c.key == key {
			return c
		}
	}
	return nil
}

// section returns the child section named key, or nil.
func (n *cfgNode) sectionNamed(key string) *cfgNode {
	c := n.child(key)
	if c == nil || !c.section {
		return nil
	}
	return c
}

// int returns the number assigned to key.
func (n *cfgNode) int(key string) (int64, bool) {
	c := n.child(key)
	if c == nil || c.section || c.array || len(c.vals) != 1 || !c.vals[0].isNum {
		return 0, false
	}
	return c.vals[0].num, true
}

// str returns the string assigned to key.
func (n *cfgNode) str(key string) (string, bool) {
	c := n.child(key)
	if c == nil || c.section || c.array || len(c.vals) != 1 || c.vals[0].isNum {
		return "", false
	}
	return c.vals[0].str, true
}

// strs returns the strings of the array assigned to key (nil if absent).
func (n *cfgNode) strs(key string) []string {
	c := n.child(key)
	if c == nil || c.section {
		return nil
	}
	var out []string
	for _, v := range c.vals {
		if !v.isNum {
			out = append(out, v.str)
		}
	}
	return out
}

// cfgParser is a recursive-descent parser over a byte slice.
type cfgParser struct {
	b     []byte
	pos   int
	line  int
	nodes int
}

// parseCfg parses a whole document into a root section.
func parseCfg(b []byte) (*cfgNode, error) {
	p := &cfgParser{b: b, line: 1}
	root := &cfgNode{section: true, line: 1}
	if err := p.items(root, 0); err != nil {
		return nil, err
	}
	return root, nil
}

func (p *cfgParser) errorf(format string, a ...any) error {
	return fmt.Errorf("line %d: %s", p.line, fmt.Sprintf(format, a...))
}

// skip passes whitespace and comments. A NUL ends the text: the metadata
// area stores it after the text.
func (p *cfgParser) skip() {
	for p.pos < len(p.b) {
		switch c := p.b[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '#':
			for p.pos < len(p.b) && p.b[p.pos] != '\n' {
				p.pos++
			}
		case c == 0:
			p.b = p.b[:p.pos]
		default:
			return
		}
	}
}

func (p *cfgParser) peek() byte {
	p.skip()
	if p.pos >= len(p.b) {
		return 0
	}
	return p.b[p.pos]
}

// items reads assignments and sections until the end of the text (depth
// 0) or a closing brace (inside a section, which the caller consumes).
func (p *cfgParser) items(parent *cfgNode, depth int) error {
	for {
		c := p.peek()
		switch {
		case c == 0 && depth == 0:
			return nil
		case c == 0:
			return p.errorf("section not closed")
		case c == '}' && depth > 0:
			return nil
		case c == '}':
			return p.errorf("'}' without a section")
		}
		if p.nodes++; p.nodes > maxCfgNodes {
			return p.errorf("more than %d entries", maxCfgNodes)
		}
		key := p.ident()
		if key == "" {
			return p.errorf("want a name, got %q", rune(c))
		}
		n := &cfgNode{key: key, line: p.line}
		switch p.peek() {
		case '{':
			if depth+1 > maxCfgDepth {
				return p.errorf("sections nested deeper than %d", maxCfgDepth)
			}
			p.pos++
			n.section = true
			if err := p.items(n, depth+1); err != nil {
				return err
			}
			p.pos++ // the '}' items stopped at
		case '=':
			p.pos++
			if err := p.value(n); err != nil {
				return err
			}
		default:
			return p.errorf("want '=' or '{' after %q", key)
		}
		parent.children = append(parent.children, n)
	}
}

func identByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '+' || c == '-'
}

func (p *cfgParser) ident() string {
	start := p.pos
	for p.pos < len(p.b) && identByte(p.b[p.pos]) {
		p.pos++
	}
	return string(p.b[start:p.pos])
}

// value reads a scalar or an array into n.
func (p *cfgParser) value(n *cfgNode) error {
	if p.peek() != '[' {
		v, err := p.scalar()
		if err != nil {
			return err
		}
		n.vals = []cfgValue{v}
		return nil
	}
	p.pos++
	n.array = true
	for {
		if p.peek() == ']' {
			p.pos++
			return nil
		}
		if len(n.vals) > 0 {
			if p.peek() != ',' {
				return p.errorf("want ',' or ']' in the array %q", n.key)
			}
			p.pos++
		}
		if p.nodes++; p.nodes > maxCfgNodes {
			return p.errorf("more than %d entries", maxCfgNodes)
		}
		v, err := p.scalar()
		if err != nil {
			return err
		}
		n.vals = append(n.vals, v)
	}
}

// scalar reads a string or a number.
func (p *cfgParser) scalar() (cfgValue, error) {
	c := p.peek()
	if c == '"' {
		return p.quoted()
	}
	start := p.pos
	for p.pos < len(p.b) && (identByte(p.b[p.pos])) {
		p.pos++
	}
	tok := string(p.b[start:p.pos])
	if tok == "" {
		return cfgValue{}, p.errorf("want a value, got %q", rune(c))
	}
	if n, err := strconv.ParseInt(tok, 0, 64); err == nil {
		return cfgValue{num: n, isNum: true, str: tok}, nil
	}
	if _, err := strconv.ParseFloat(tok, 64); err == nil {
		return cfgValue{str: tok}, nil
	}
	return cfgValue{}, p.errorf("%q is neither a number nor a quoted string", tok)
}

// quoted reads a double-quoted string; a backslash escapes the next byte.
func (p *cfgParser) quoted() (cfgValue, error) {
	p.pos++ // the opening quote
	var s []byte
	for p.pos < len(p.b) {
		c := p.b[p.pos]
		p.pos++
		switch c {
		case '"':
			return cfgValue{str: string(s)}, nil
		case '\\':
			if p.pos >= len(p.b) {
				return cfgValue{}, p.errorf("string not closed")
			}
			c = p.b[p.pos]
			p.pos++
		case '\n':
			p.line++
		}
		s = append(s, c)
	}
	return cfgValue{}, p.errorf("string not closed")
}
