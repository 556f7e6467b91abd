package testbed

import (
	"net"
	"sync"
)

// Proxy forwards TCP connections from a loopback port to a target, and can
// cut them (a clean partition: connections closed, new ones refused) or
// blackhole them (a partition that drops packets: connections stay open,
// new ones are accepted, nothing is forwarded either way until Heal, which
// delivers what was held, as TCP's retransmissions would). The server
// keeps running for everyone else.
type Proxy struct {
	Addr   string // 127.0.0.1:port to dial instead of the target
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	hold  chan struct{} // non-nil while blackholed; closed by Heal
	conns map[net.Conn]bool
}

// StartProxy listens on a free loopback port until the bed closes.
func (b *Bed) StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.accept()
	}()
	b.onClose(func() {
		ln.Close()
		<-done
		p.Heal()
		p.Cut()
	})
	return p, nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = true
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve connects c to the target once the proxy is not blackholed.
func (p *Proxy) serve(c net.Conn) {
	p.wait()
	up, err := net.Dial("tcp", p.target)
	p.mu.Lock()
	if err != nil || p.cut || !p.conns[c] {
		p.mu.Unlock()
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	p.conns[up] = true
	p.mu.Unlock()
	go p.pipe(c, up)
	go p.pipe(up, c)
}

// wait returns when the proxy is not blackholed.
func (p *Proxy) wait() {
	p.mu.Lock()
	g := p.hold
	p.mu.Unlock()
	if g != nil {
		<-g
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		p.wait()
		n, err := src.Read(buf)
		if n > 0 {
			// Bytes read just before a blackhole are held too.
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every forwarded connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Blackhole stops forwarding in both directions without closing anything:
// the client's connections stay open and new ones are accepted, but no
// byte goes through until Heal.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold == nil {
		p.hold = make(chan struct{})
	}
}

// Heal ends a blackhole: what was held is delivered, and connections
// accepted meanwhile reach the target.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
}
