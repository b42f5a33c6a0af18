// The browser side of a Specter.Room: plain JavaScript, no build step. Signs in to the
// server that served this page (libwebrtc's peerconnection protocol), offers the room its
// camera, microphone and a data channel, answers the room's offers as others come and go,
// and shows one video per other participant (the stream id is the publisher's name).
// window.room exposes the state and actions for tests.
(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    id: null, roomId: null, pc: null, dc: null, status: "not joined",
    chat: [], errors: [], remoteSet: false, pendingCandidates: [], streams: new Map(),
  };
  const setStatus = (s) => { state.status = s; $("status").textContent = s; };
  const post = (body, type = "text/plain") =>
    fetch(`/message?peer_id=${state.id}&to=${state.roomId}`, {
      method: "POST", body, headers: { "Content-Type": type },
    });
  const log = (from, text) => {
    state.chat.push({ from, text });
    const line = document.createElement("div");
    line.textContent = `${from}: ${text}`;
    $("chatlog").appendChild(line);
  };

  async function join(name, roomName) {
    const res = await fetch(`/sign_in?${encodeURIComponent(name)}`);
    if (!res.ok) throw new Error(`sign_in: ${res.status}`);
    state.id = res.headers.get("Pragma");
    const lines = (await res.text()).split("\n").filter((l) => l).map((l) => l.split(","));
    const room = lines.find(([n, , on]) => n === roomName && on === "1");
    if (!room) { setStatus(`no room named ${roomName}`); throw new Error("no such room"); }
    state.roomId = room[1];
    waitLoop();
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    $("local").srcObject = media;
    const pc = new RTCPeerConnection();
    state.pc = pc;
    for (const track of media.getTracks()) pc.addTrack(track, media);
    state.dc = pc.createDataChannel("room");
    state.dc.onopen = () => { $("send").disabled = false; };
    state.dc.onmessage = (e) => log("room", typeof e.data === "string" ? e.data : "(binary)");
    pc.onicecandidate = (e) => { if (e.candidate) post(JSON.stringify(e.candidate.toJSON())); };
    pc.onconnectionstatechange = () => setStatus(`connection ${pc.connectionState}`);
    pc.ontrack = (e) => showTrack(e);
    await pc.setLocalDescription(await pc.createOffer());
    await post(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
    $("join-button").disabled = true;
    $("leave-button").disabled = false;
    setStatus("joining");
  }

  function showTrack(e) {
    const stream = e.streams[0];
    if (!stream) return;
    let entry = state.streams.get(stream.id);
    if (!entry) {
      const figure = document.createElement("figure");
      const video = document.createElement("video");
      video.autoplay = true; video.playsInline = true; video.srcObject = stream;
      const caption = document.createElement("figcaption");
      caption.textContent = stream.id;
      figure.append(video, caption);
      $("videos").appendChild(figure);
      entry = { stream, figure };
      state.streams.set(stream.id, entry);
      // The room removed the publisher's senders: drop the video with its last track.
      stream.onremovetrack = () => {
        if (stream.getTracks().length === 0) {
          figure.remove();
          state.streams.delete(stream.id);
        }
      };
    }
  }

  async function waitLoop() {
    while (state.id) {
      let res;
      try { res = await fetch(`/wait?peer_id=${state.id}`); } catch (e) {
        // Leaving ends the wait in flight: that is no error.
        if (!state.id) return;
        state.errors.push(String(e)); await new Promise((r) => setTimeout(r, 500)); continue;
      }
      if (!res.ok) { state.id = null; setStatus(`disconnected (${res.status})`); return; }
      const from = res.headers.get("Pragma");
      const body = await res.text();
      if (from !== state.roomId) continue;
      await onMessage(body).catch((e) => state.errors.push(String(e)));
    }
  }

  async function onMessage(body) {
    const pc = state.pc;
    if (body === "BYE") { setStatus("the room hung up"); return leave(false); }
    let msg;
    try { msg = JSON.parse(body); } catch (_) { return; }
    if (!pc) return;
    if (msg.type === "offer" || msg.type === "answer") {
      await pc.setRemoteDescription(msg);
      state.remoteSet = true;
      for (const c of state.pendingCandidates.splice(0)) await pc.addIceCandidate(c);
      if (msg.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        await post(JSON.stringify({ type: "answer", sdp: pc.localDescription.sdp }));
      }
    } else if (msg.candidate !== undefined) {
      if (state.remoteSet) await pc.addIceCandidate(msg);
      else state.pendingCandidates.push(msg);
    }
  }

  async function leave(sayBye = true) {
    if (sayBye && state.id && state.roomId) await post("BYE").catch(() => {});
    if (state.pc) state.pc.close();
    state.pc = null;
    const id = state.id;
    state.id = null;
    if (id) await fetch(`/sign_out?peer_id=${id}`).catch(() => {});
    for (const { figure } of state.streams.values()) figure.remove();
    state.streams.clear();
    $("join-button").disabled = false;
    $("leave-button").disabled = true;
    $("send").disabled = true;
    if (sayBye) setStatus("left");
  }

  function sendChat(text) {
    if (!state.dc || state.dc.readyState !== "open") return false;
    state.dc.send(text);
    log("me", text);
    return true;
  }

  async function inboundVideo() {
    if (!state.pc) return [];
    const out = [];
    (await state.pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        out.push({ trackIdentifier: r.trackIdentifier, framesDecoded: r.framesDecoded || 0 });
      }
    });
    return out;
  }

  $("join-button").onclick = () => join($("name").value, $("room").value).catch((e) => state.errors.push(String(e)));
  $("leave-button").onclick = () => leave();
  $("send").onclick = () => { sendChat($("message").value); $("message").value = ""; };

  window.room = {
    join, leave, sendChat, inboundVideo,
    status: () => state.status,
    chat: () => state.chat,
    errors: () => state.errors,
    publishers: () => [...state.streams.keys()].sort(),
    connectionState: () => (state.pc ? state.pc.connectionState : "none"),
  };
})();
