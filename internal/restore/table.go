package restore

import (
	"fmt"

	"github.com/asrlinux/asr/internal/partition"
)

// adjustTable fits the image's partition table to a target larger than the
// image, just before the held-back first chunk is written: a GPT's backup
// header and entries move to the end of the target (written now, so the
// first chunk is still the last write), and with grow the last partition is
// enlarged. The first chunk, held in memory, gets the new primary table and
// verification expects it as written.
//
// A table that cannot be adjusted is left as the image has it, with a note:
// the restore itself is complete and correct, and --grow then says why it
// could not grow.
func (w *writer) adjustTable() error {
	head, ok := w.deferred[0]
	if !ok {
		return nil // the first chunk is zeros or free space: no table
	}
	t := partition.Parse(head)
	w.hasTable = t.Scheme != partition.None
	if !w.hasTable || w.tgt.Size <= w.info.Size {
		return nil
	}
	r, err := partition.Resize(head, w.info.Size, w.tgt.Size, w.grow)
	if err != nil {
		w.tableNote = fmt.Sprintf("left as the image has it: %v", err)
		return nil
	}
	if !r.Changed {
		return nil
	}
	var notes []string
	if r.Backup != nil {
		if r.BackupOff < w.info.Size {
			w.tableNote = fmt.Sprintf("left as the image has it: the target is only %d bytes larger than the image, too little to move the GPT backup (sgdisk -e can do it later)", w.tgt.Size-w.info.Size)
			return nil
		}
		if _, err := w.tgt.WriteAt(r.Backup, r.BackupOff); err != nil {
			return err
		}
		if err := w.tgt.Sync(); err != nil {
			return err
		}
		w.extra = append(w.extra, patch{off: r.BackupOff, data: r.Backup})
		notes = append(notes, fmt.Sprintf("GPT backup moved to the end of the %s target", HumanBytes(w.tgt.Size)))
	}
	if r.Grown != nil {
		w.grown = r.Grown
		notes = append(notes, fmt.Sprintf("partition %d enlarged to %s", r.Grown.Number, HumanBytes(r.Grown.Size)))
	}
	w.deferred[0] = r.Head
	// Verified byte for byte against what is written (finish sets held
	// too): the image's sum no longer applies, and a new one of 8 MiB
	// would only delay the last write.
	w.sums[0] = sum{held: r.Head}
	for i, n := range notes {
		if i > 0 {
			w.tableNote += "; "
		}
		w.tableNote += n
	}
	return nil
}
