package route

// phase is where a dump is: the kernel lists links, then addresses.
type phase uint8

const (
	idle phase = iota
	dumpingLinks
	dumpingAddrs
)

// maxRedumps is how many dumps in a row the kernel may flag as
// inconsistent before the listener stops asking again by itself.
const maxRedumps = 3

// dumpKind is what a dump request asks for.
type dumpKind uint8

const (
	dumpLinks dumpKind = iota
	dumpAddrs
)

// dump follows the reading of every link and address: RTM_GETLINK, then
// RTM_GETADDR, each answered with messages ending in NLMSG_DONE. Changes
// keep arriving meanwhile, in the order they happened relative to the
// dump's messages (the kernel makes each part of a dump when the socket
// has room), so they are applied as they come; what neither the dump
// nor a change mentioned is gone.
type dump struct {
	phase phase
	seq   uint32 // of the request being answered
	// spoiled: a message may be missing from this dump, so it must not
	// conclude that what it did not list is gone.
	spoiled bool
	again   bool  // dump again when this one ends
	err     error // the kernel refused the last dump
}

// startDump asks for every link, and then every address.
func (l *Listener) startDump() {
	l.dump = dump{phase: dumpingLinks, seq: l.dump.seq + 1}
	l.st.gen++
	l.stats.dumps.Add(1)
	l.request(dumpLinks)
}

func (l *Listener) request(k dumpKind) {
	if err := l.conn.send(dumpRequest(k, l.dump.seq)); err != nil {
		l.dump.err = err
		l.log.Error("route: cannot ask for the links and addresses; the next overrun tries again", "err", err)
		l.dump.phase, l.dump.again = idle, false
	}
}

// dumpDone ends a phase of the dump: what it did not list is gone.
func (l *Listener) dumpDone() {
	switch l.dump.phase {
	case dumpingLinks:
		if !l.dump.spoiled {
			l.st.sweepLinks()
		}
		l.dump.phase = dumpingAddrs
		l.dump.seq++
		l.request(dumpAddrs)
	case dumpingAddrs:
		if !l.dump.spoiled {
			l.st.sweepAddrs()
			l.spoiledInARow = 0
		} else {
			l.spoiledInARow++
		}
		l.dump.phase = idle
		if l.dump.again {
			l.startDump()
		}
	}
}

// lost is an overrun: dump now, or again after the dump in progress,
// which may lack what was lost.
func (l *Listener) lost() {
	if l.dump.phase == idle {
		l.startDump()
		return
	}
	l.dump.spoiled, l.dump.again = true, true
}
