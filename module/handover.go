package module

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/trafficsplit/splitter/internal/config"
)

// Hot restart (docs/module.md, "Hot restart"): Envoy upgrades in place by
// starting a new process (epoch N+1) beside the running one, which drains
// and exits. Both load the module, and both want the admin port and the
// one control plane. The old epoch's module hands them over, on request of
// the new one, through a Unix socket named after admin_addr (Linux's
// abstract namespace: no file, gone with the process), peers checked to be
// the same user:
//
//  1. The new epoch's first filter configuration finds admin_addr in use
//     and asks the holder to hand over.
//  2. The old one stops its control plane: the admin API stops accepting
//     and finishes the requests it has (every acknowledged write is in
//     the state), the rollouts, the file watch or etcd stop. It answers
//     with its whole runtime state (the state file's document: overrides,
//     runtime mirrors and routes, what they were set against, rollout
//     states), with or without a state file, and becomes a follower.
//  3. The new one binds admin_addr, builds its control plane on that state
//     (the state file, if any, is written from it), acknowledges, and
//     serves. Admin requests that hit the short gap are refused or dropped,
//     never acknowledged and lost.
//  4. The follower keeps deciding the requests of the connections it is
//     draining, on the new epoch's state, fetched four times a second over
//     the same socket. If the new epoch goes away (it failed to start, say)
//     while the old one still runs, the old one binds admin_addr again and
//     runs the control plane on the state it last had.

// handoverAckTimeout bounds how long the old epoch waits for the new one
// to build its control plane (an etcd read may take a while) before it
// treats the handover as failed (then it follows, and takes back, below).
const handoverAckTimeout = time.Minute

// handoverReplyTimeout bounds the new epoch's wait for the old one to stop
// its control plane (the admin server's shutdown takes at most seconds).
const handoverReplyTimeout = 30 * time.Second

// followInterval is how often a follower fetches the leader's state (a
// round trip on a local socket and a few kilobytes of JSON; applied only
// when it changed): how long the old epoch's draining connections may lag
// a change made on the new one. takeBackAfter is how long fetches must
// fail in a row before it tries to take the control plane back.
const (
	followInterval = 250 * time.Millisecond
	takeBackAfter  = 3 * time.Second
)

// adminBindTimeout bounds the new epoch's retries to bind admin_addr after
// the old one released it.
const adminBindTimeout = 10 * time.Second

// handoverProtocol is the version of the handover's messages this build
// speaks: every request and reply carries its sender's ("protocol"), so
// that a later module, on either side of a hot restart, can answer in a
// version the other knows, or refuse before anything stops. Fields a
// message carries that this build does not know are ignored (the state
// document's too, see package compat). A build that speaks no version at
// all predates the handover (docs/upgrading.md: a full restart).
const handoverProtocol = 1

// negotiate is the protocol a reply to a request in protocol asked is
// written in: the highest both sides speak (a request without a version,
// 0, is version 1's).
func negotiate(asked int) int { return min(max(asked, 1), handoverProtocol) }

// handoverName is the Unix socket of the module holding adminAddr.
func handoverName(adminAddr string) string { return "@splitter-module-handover/" + adminAddr }

// handoverRequest is one message from a new epoch (op "handover", then
// "ack") or a follower (op "state").
type handoverRequest struct {
	Op  string `json:"op"`
	PID int    `json:"pid"`
	// Protocol is the highest handover protocol the sender speaks.
	Protocol int `json:"protocol,omitempty"`
}

// handoverReply answers a handoverRequest.
type handoverReply struct {
	Error string `json:"error,omitempty"`
	PID   int    `json:"pid"`
	// Protocol is the version the reply is written in (negotiate).
	Protocol int `json:"protocol,omitempty"`
	// State is store.ExportState's document.
	State json.RawMessage `json:"state,omitempty"`
	// SHA256 and Source identify the leader's configuration ("state").
	SHA256 string `json:"sha256,omitempty"`
	Source string `json:"source,omitempty"`
}

// fixedPort reports whether addr names a port (not 0): only such an
// admin_addr can be taken over, or found by the next epoch.
func fixedPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port != "0" && port != ""
}

// exchange sends req on c and reads one reply, within timeout.
func exchange(c net.Conn, r *bufio.Reader, req handoverRequest, timeout time.Duration) (handoverReply, error) {
	var rep handoverReply
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return rep, err
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return rep, err
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	if rep.Protocol > handoverProtocol {
		// A holder that ignores what was asked: nothing here can read it.
		return rep, fmt.Errorf("the module at the other end answered in handover protocol %d; this one speaks up to %d "+
			"(restart Envoy fully to change between them)", rep.Protocol, handoverProtocol)
	}
	return rep, nil
}

// takeover is a handover in progress on the new epoch's side.
type takeover struct {
	c     net.Conn
	r     *bufio.Reader
	pid   int    // the old epoch's process
	state []byte // its runtime state
}

// requestHandover asks the module holding adminAddr to hand it over.
func requestHandover(adminAddr string) (*takeover, error) {
	c, err := dialHandover(adminAddr)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	rep, err := exchange(c, r, handoverRequest{Op: "handover", PID: os.Getpid(), Protocol: handoverProtocol}, handoverReplyTimeout)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handover from the module holding %s: %w", adminAddr, err)
	}
	return &takeover{c: c, r: r, pid: rep.PID, state: rep.State}, nil
}

// ack tells the old epoch that the new one serves: it follows from now.
func (t *takeover) ack() {
	if t == nil {
		return
	}
	_ = t.c.SetDeadline(time.Now().Add(5 * time.Second))
	_ = json.NewEncoder(t.c).Encode(handoverRequest{Op: "ack", PID: os.Getpid(), Protocol: handoverProtocol})
	t.c.Close()
}

// abort drops a handover: the old epoch follows nobody and takes back.
func (t *takeover) abort() {
	if t != nil {
		t.c.Close()
	}
}

// dialHandover connects to the handover socket of adminAddr's holder.
func dialHandover(adminAddr string) (net.Conn, error) {
	if !handoverSupported {
		return nil, errHandoverUnsupported
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	return d.Dial("unix", handoverName(adminAddr))
}

// listenHandover binds the handover socket of adminAddr.
func listenHandover(adminAddr string) (net.Listener, error) {
	if !handoverSupported {
		return nil, errHandoverUnsupported
	}
	return net.Listen("unix", handoverName(adminAddr))
}

// bindAdmin binds addr, retrying while it is in use until timeout: the
// old epoch has released it, but the kernel may not have finished.
func bindAdmin(addr string, timeout time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(timeout)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return lis, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// takeAdmin binds admin_addr for a starting control plane. When another
// process holds it and that is the module of the previous Envoy epoch,
// that one hands it over (with its state); otherwise in use is an error.
func takeAdmin(addr string, log *slog.Logger) (net.Listener, *takeover, error) {
	lis, err := net.Listen("tcp", addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || !fixedPort(addr) {
		if err != nil {
			return nil, nil, fmt.Errorf("admin_addr: %w", err)
		}
		return lis, nil, nil
	}
	t, herr := requestHandover(addr)
	if herr != nil {
		return nil, nil, fmt.Errorf("admin_addr: %w (and no splitter module of a previous Envoy epoch holding it "+
			"handed it over: %v)", err, herr)
	}
	log.Info("hot restart: the previous Envoy epoch's module handed over the control plane", "admin_addr", addr, "previous_pid", t.pid)
	lis, err = bindAdmin(addr, adminBindTimeout)
	if err != nil {
		t.abort()
		return nil, nil, fmt.Errorf("admin_addr: after the handover: %w", err)
	}
	return lis, t, nil
}

// serveHandovers answers the next epoch (handover) and followers (state)
// on ln until ln is closed.
func (p *Process) serveHandovers(ln net.Listener, addr string, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.handleHandover(c, ln, addr, log)
	}
}

func (p *Process) handleHandover(c net.Conn, ln net.Listener, addr string, log *slog.Logger) {
	defer c.Close()
	if err := samePeerUser(c); err != nil {
		log.Warn("hot restart: handover socket: peer refused", "error", err)
		return
	}
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	var req handoverRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return
	}
	reply := func(rep handoverReply) error {
		rep.PID, rep.Protocol = os.Getpid(), negotiate(req.Protocol)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return json.NewEncoder(c).Encode(rep)
	}
	switch req.Op {
	case "state":
		rep, err := p.leaderState()
		if err != nil {
			rep = handoverReply{Error: err.Error()}
		}
		_ = reply(rep)
	case "handover":
		state, err := p.handOver(ln, req.PID, log)
		if err != nil {
			_ = reply(handoverReply{Error: err.Error()})
			return
		}
		if err := reply(handoverReply{State: state}); err != nil {
			log.Error("hot restart: the handover could not be sent; taking the control plane back", "error", err)
		}
		_ = c.SetDeadline(time.Now().Add(handoverAckTimeout))
		line, err := r.ReadBytes('\n')
		acked := err == nil && json.Unmarshal(line, &req) == nil && req.Op == "ack"
		if acked {
			log.Info("hot restart: the new Envoy epoch runs the control plane; this one follows it until it exits",
				"new_pid", req.PID)
		} else {
			log.Error("hot restart: the new Envoy epoch did not confirm the handover; following it, and taking the control plane back if it is gone",
				"new_pid", req.PID)
		}
		p.startFollowing(addr, log)
	default:
		_ = reply(handoverReply{Error: fmt.Sprintf("unknown op %q", req.Op)})
	}
}

// handOver stops the control plane for the next epoch and returns its
// state; ln (the handover socket) is closed, so that the next epoch can
// take the name. Errors leave the control plane running.
func (p *Process) handOver(ln net.Listener, pid int, log *slog.Logger) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != roleLeader || p.plane == nil {
		return nil, errors.New("this module does not run the control plane")
	}
	log.Info("hot restart: handing the control plane over to the new Envoy epoch", "new_pid", pid)
	p.stopPlaneLocked()
	ln.Close()
	state, err := p.plane.Store().ExportState()
	if err != nil {
		// The plane is stopped: take it back rather than run none.
		log.Error("hot restart: exporting the state failed; keeping the control plane", "error", err)
		if rerr := p.restartLocked(nil, nil); rerr != nil {
			log.Error("hot restart: the control plane could not be restarted", "error", rerr)
		}
		return nil, fmt.Errorf("exporting the state: %w", err)
	}
	p.role = roleFollower
	return state, nil
}

// leaderState is the "state" answer: the state and the identity of the
// configuration it applies to.
func (p *Process) leaderState() (handoverReply, error) {
	p.mu.Lock()
	plane, leader := p.plane, p.role == roleLeader
	p.mu.Unlock()
	if !leader || plane == nil {
		return handoverReply{}, errors.New("this module does not run the control plane")
	}
	snap := plane.Store().Load()
	state, err := plane.Store().ExportState()
	if err != nil {
		return handoverReply{}, err
	}
	rep := handoverReply{State: state}
	if snap != nil {
		rep.SHA256, rep.Source = snap.SHA256, snap.Source
	}
	return rep, nil
}

// startFollowing runs the follower until the process ends or it takes the
// control plane back.
func (p *Process) startFollowing(addr string, log *slog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	p.followStop = cancel
	go p.follow(ctx, addr, log)
}

// follow applies the leader's state every followInterval, and takes the
// control plane back when the leader stops answering and admin_addr is
// free.
func (p *Process) follow(ctx context.Context, addr string, log *slog.Logger) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	var last []byte
	var failingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.followOnce(addr, &last, log)
		if err == nil {
			failingSince = time.Time{}
			continue
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
			log.Warn("hot restart: the new Envoy epoch's state cannot be read", "error", err)
		}
		if time.Since(failingSince) < takeBackAfter {
			continue
		}
		if p.takeBack(addr, log) {
			return
		}
	}
}

// followOnce fetches and applies the leader's state (unless it is the
// state last applied). The state applies to the leader's configuration:
// the same one this follower has, or its file re-read (file mode) when
// the leader loaded a newer version of it. Otherwise (a configuration
// pushed to etcd after the handover) the leader's overrides meet this
// follower's configuration under the survival rule, which keeps only
// those set against the weights it has.
func (p *Process) followOnce(addr string, last *[]byte, log *slog.Logger) error {
	p.mu.Lock()
	st, s := p.plane.Store(), p.cfg.Settings
	p.mu.Unlock()
	c, err := dialHandover(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := exchange(c, bufio.NewReader(c), handoverRequest{Op: "state", PID: os.Getpid(), Protocol: handoverProtocol}, 5*time.Second)
	if err != nil {
		return err
	}
	snap := st.Load()
	if rep.SHA256 == "" || snap == nil {
		return nil // a side without a configuration: keep what this one has
	}
	key := append(append([]byte(rep.SHA256+"\n"), rep.Source+"\n"...), rep.State...)
	if string(key) == string(*last) {
		return nil
	}
	cfg, sha, source := snap.File, snap.SHA256, snap.Source
	if rep.SHA256 != sha && !s.FleetMode() && s.ConfigPath != "" {
		if l, err := config.ReadFile(s.ConfigPath); err == nil && l.SHA256 == rep.SHA256 {
			cfg, sha, source = l.Config, l.SHA256, rep.Source
		}
	}
	if sha != rep.SHA256 && !bytes.HasPrefix(*last, []byte(rep.SHA256+"\n")) {
		log.Warn("hot restart: the new Envoy epoch runs another configuration; this one follows its overrides on its own",
			"sha256", sha, "new_sha256", rep.SHA256)
	}
	if err := st.ApplyState(cfg, sha, source, rep.State); err != nil {
		return err
	}
	*last = key
	return nil
}

// takeBack binds admin_addr and runs the control plane again on the state
// this follower has; false when the address is not free (the leader is
// alive, or something else holds it).
func (p *Process) takeBack(addr string, log *slog.Logger) bool {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	state, err := p.plane.Store().ExportState()
	if err == nil {
		err = p.restartLocked(lis, state)
	} else {
		lis.Close()
	}
	if err != nil {
		log.Error("hot restart: taking the control plane back failed", "error", err)
		return false
	}
	log.Warn("hot restart: the new Envoy epoch is gone; this one runs the control plane again", "admin_addr", addr)
	return true
}
