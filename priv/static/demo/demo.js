// The browser side of Specter's signalling demo: plain JavaScript, no build step.
// Speaks libwebrtc's peerconnection_server protocol to the server that served this page:
// GET /sign_in?name, a GET /wait long-poll loop, POST /message?peer_id=me&to=peer,
// GET /sign_out. Messages between peers are libwebrtc's JSON ({type, sdp} and
// {candidate, sdpMid, sdpMLineIndex}); "BYE" hangs up. window.demo exposes the state and
// actions for tests.
(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    id: null,
    name: null,
    peers: new Map(), // id -> name
    pc: null,
    remote: null, // the peer id of the call
    dc: null,
    chat: [], // {from: "me" | name, text}
    status: "signed out",
    pendingCandidates: [],
    localStream: null,
    errors: [],
  };

  const setStatus = (s) => {
    state.status = s;
    $("status").textContent = s;
  };

  const log = (from, text) => {
    state.chat.push({ from, text });
    const line = document.createElement("div");
    line.textContent = `${from}: ${text}`;
    $("chatlog").appendChild(line);
    $("chatlog").scrollTop = $("chatlog").scrollHeight;
  };

  const renderPeers = () => {
    const ul = $("peers");
    ul.innerHTML = "";
    for (const [id, name] of state.peers) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.textContent = `Call ${name}`;
      button.disabled = state.pc !== null;
      button.onclick = () => call(id);
      li.appendChild(button);
      ul.appendChild(li);
    }
  };

  // "name,id,connected" lines.
  const parsePeers = (text) =>
    text
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => {
        const [name, id, connected] = l.split(",");
        return { name, id, connected: connected === "1" };
      });

  async function signIn(name) {
    const res = await fetch(`/sign_in?${encodeURIComponent(name)}`);
    if (!res.ok) throw new Error(`sign_in: ${res.status}`);
    state.id = res.headers.get("Pragma");
    state.name = name;
    const [me, ...others] = parsePeers(await res.text());
    for (const p of others) state.peers.set(p.id, p.name);
    $("signin-button").disabled = true;
    $("signout-button").disabled = false;
    setStatus(`signed in as ${me ? me.name : name} (id ${state.id})`);
    renderPeers();
    waitLoop();
  }

  async function signOut() {
    if (!state.id) return;
    if (state.pc) await hangup();
    const id = state.id;
    state.id = null;
    await fetch(`/sign_out?peer_id=${id}`);
    state.peers.clear();
    renderPeers();
    $("signin-button").disabled = false;
    $("signout-button").disabled = true;
    setStatus("signed out");
  }

  async function waitLoop() {
    while (state.id) {
      let res;
      try {
        res = await fetch(`/wait?peer_id=${state.id}`);
      } catch (e) {
        state.errors.push(String(e));
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!state.id) return;
      if (!res.ok) {
        state.errors.push(`wait: ${res.status}`);
        setStatus(`disconnected (${res.status})`);
        state.id = null;
        return;
      }
      const from = res.headers.get("Pragma");
      const body = await res.text();
      if (from === state.id) {
        // A membership notification.
        for (const p of parsePeers(body)) {
          if (p.connected) state.peers.set(p.id, p.name);
          else {
            state.peers.delete(p.id);
            if (p.id === state.remote) closeCall("the peer left");
          }
        }
        renderPeers();
      } else {
        await onMessage(from, body).catch((e) => state.errors.push(String(e)));
      }
    }
  }

  const send = (to, body) =>
    fetch(`/message?peer_id=${state.id}&to=${to}`, {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  function newConnection(peer) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    state.remote = peer;
    state.pendingCandidates = [];
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate)
        send(peer, {
          candidate: e.candidate.candidate,
          sdpMid: e.candidate.sdpMid,
          sdpMLineIndex: e.candidate.sdpMLineIndex,
        });
    };
    pc.ontrack = (e) => {
      const video = $("remote");
      if (!video.srcObject) video.srcObject = new MediaStream();
      video.srcObject.addTrack(e.track);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      setStatus(`call with ${state.peers.get(peer) || peer}: ${pc.connectionState}`);
      if (pc.connectionState === "failed") closeCall("failed");
    };
    pc.ondatachannel = (e) => wireChannel(e.channel);
    $("hangup").disabled = false;
    renderPeers();
    return pc;
  }

  function wireChannel(dc) {
    state.dc = dc;
    dc.onopen = () => {
      $("message").disabled = false;
      $("send").disabled = false;
    };
    dc.onclose = () => {
      $("message").disabled = true;
      $("send").disabled = true;
    };
    dc.onmessage = (e) =>
      log(state.peers.get(state.remote) || state.remote, typeof e.data === "string" ? e.data : "(binary)");
  }

  async function localMedia() {
    if (!state.localStream) {
      state.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      $("local").srcObject = state.localStream;
    }
    return state.localStream;
  }

  async function call(peer) {
    if (state.pc) throw new Error("already in a call");
    const stream = await localMedia();
    const pc = newConnection(peer);
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    wireChannel(pc.createDataChannel("chat"));
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await send(peer, { type: offer.type, sdp: offer.sdp });
    setStatus(`calling ${state.peers.get(peer) || peer}`);
  }

  async function onMessage(from, body) {
    if (body === "BYE") {
      if (from === state.remote) closeCall("the peer hung up");
      return;
    }
    let msg;
    try {
      msg = JSON.parse(body);
    } catch (_) {
      return;
    }
    if (msg.type === "specter-control") return; // Specter's call control: not needed here.
    if (msg.type === "offer") {
      if (state.pc && state.remote !== from) {
        await send(from, "BYE");
        return;
      }
      const stream = await localMedia();
      const pc = state.pc || newConnection(from);
      await pc.setRemoteDescription(msg);
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await send(from, { type: answer.type, sdp: answer.sdp });
      await flushCandidates();
    } else if (msg.type === "answer" && state.pc && from === state.remote) {
      await state.pc.setRemoteDescription(msg);
      await flushCandidates();
    } else if (msg.candidate !== undefined && from === state.remote) {
      if (!msg.candidate) return;
      if (state.pc && state.pc.remoteDescription) await state.pc.addIceCandidate(msg);
      else state.pendingCandidates.push(msg);
    }
  }

  async function flushCandidates() {
    const queued = state.pendingCandidates;
    state.pendingCandidates = [];
    for (const c of queued) await state.pc.addIceCandidate(c);
  }

  function closeCall(why) {
    if (state.pc) state.pc.close();
    state.pc = null;
    state.dc = null;
    state.remote = null;
    $("remote").srcObject = null;
    $("hangup").disabled = true;
    $("message").disabled = true;
    $("send").disabled = true;
    setStatus(`call ended: ${why}`);
    renderPeers();
  }

  async function hangup() {
    if (!state.pc) return;
    const peer = state.remote;
    closeCall("hung up");
    await send(peer, "BYE");
  }

  function sendChat(text) {
    if (!state.dc || state.dc.readyState !== "open") throw new Error("no open channel");
    state.dc.send(text);
    log("me", text);
  }

  async function inboundVideo() {
    if (!state.pc) return null;
    const report = await state.pc.getStats();
    let found = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") found = s;
    });
    return found && {
      framesDecoded: found.framesDecoded || 0,
      frameWidth: found.frameWidth || 0,
      frameHeight: found.frameHeight || 0,
      freezeCount: found.freezeCount || 0,
    };
  }

  $("signin").onsubmit = (e) => {
    e.preventDefault();
    signIn($("name").value).catch((err) => setStatus(`sign-in failed: ${err}`));
  };
  $("signout-button").onclick = () => signOut();
  $("hangup").onclick = () => hangup();
  $("chat").onsubmit = (e) => {
    e.preventDefault();
    const text = $("message").value;
    if (text) {
      sendChat(text);
      $("message").value = "";
    }
  };
  window.addEventListener("beforeunload", () => {
    if (state.id) fetch(`/sign_out?peer_id=${state.id}`, { keepalive: true });
  });

  // For tests and the curious.
  window.demo = {
    signIn,
    signOut,
    call: (name) => {
      for (const [id, n] of state.peers) if (n === name) return call(id);
      throw new Error(`no peer named ${name}`);
    },
    hangup,
    sendChat,
    inboundVideo,
    peers: () => [...state.peers.values()].sort(),
    chat: () => state.chat,
    status: () => state.status,
    connectionState: () => (state.pc ? state.pc.connectionState : null),
    errors: () => state.errors,
  };
})();
