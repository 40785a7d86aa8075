package source

// Skipper is a source that can leave out chunks the target already holds,
// for a delta restore: after Skip, Run delivers every chunk except the
// stored chunks for which have reports true, and fetches none of them (a
// web server is asked only for the others; a multicast client counts them
// as done). Chunks the image does not store are still delivered: they cost
// nothing to send. Skip is called once, before Run; have must be safe to
// call from several goroutines and must not change during Run.
type Skipper interface {
	Skip(have func(i int) bool)
}

// wanted reports whether chunk i is to be delivered under have (nil: all).
func wanted(have func(int) bool, i int) bool { return have == nil || !have(i) }
