module github.com/asrlinux/asr

go 1.26.8

require (
	github.com/klauspost/compress v1.20.4
	github.com/klauspost/reedsolomon v1.14.2
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.50.0
	howett.net/plist v1.0.1
)

require github.com/klauspost/cpuid/v2 v2.3.0 // indirect
