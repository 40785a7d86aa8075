package sourceurl

// Schemes returns every kind of source asr restores from, in the order
// help and messages list them. The local entry (no prefix) takes whatever
// no other entry does. A function, not a variable, so that no caller can
// change the table for the others.
func Schemes() []Scheme {
	return []Scheme{
		{Prefix: "", Help: localHelp, Check: checkLocal, Redact: redactLocal, Open: openLocal},
		{Prefix: "http://", Network: true, Example: "http://HOST/IMAGE", Help: httpHelp, Check: checkHTTP, Redact: redactURL, Open: openHTTP},
		{Prefix: "https://", Network: true, Example: "https://HOST/IMAGE", Check: checkHTTP, Redact: redactURL, Open: openHTTP},
		{Prefix: "asr://", Network: true, Example: "asr://HOST", Help: asrHelp, Check: checkASR, Redact: redactURL, Open: openASR},
		{Prefix: "oci://", Network: true, Example: "oci://HOST/REPO:TAG", Help: ociHelp, Check: checkOCI, Redact: redactURL, Open: openOCI},
	}
}
