// The browser side of Specter's interop tests. Runs in a page served from 127.0.0.1 by
// driver.js; the driver calls `window.specterTest.<name>(...args)` for each command from
// Elixir and `window.specterEmit(event)` (a Playwright binding) carries events back.
//
// Peer connections are named by the test ("pc"); data channels by their label, which the
// tests keep unique within a page. Binary payloads travel as base64 in both directions.
"use strict";

(() => {
  const pcs = new Map();
  const channels = new Map();

  const emit = (event) => {
    // Never let a failing binding break a WebRTC callback.
    window.specterEmit(event).catch(() => {});
  };

  const toBase64 = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  };

  const fromBase64 = (b64) => {
    const s = atob(b64);
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes;
  };

  const getPc = (name) => {
    const pc = pcs.get(name);
    if (!pc) throw new Error(`no peer connection ${name}`);
    return pc;
  };

  const getChannel = (label) => {
    const dc = channels.get(label);
    if (!dc) throw new Error(`no data channel ${label}`);
    return dc;
  };

  const describe = (dc) => ({
    label: dc.label,
    id: dc.id,
    negotiated: dc.negotiated,
    ordered: dc.ordered,
    protocol: dc.protocol,
    readyState: dc.readyState,
    binaryType: dc.binaryType,
  });

  const wire = (pcName, dc) => {
    if (channels.has(dc.label)) throw new Error(`duplicate data channel label ${dc.label}`);
    channels.set(dc.label, dc);
    dc.binaryType = "arraybuffer";
    const base = () => ({ pc: pcName, label: dc.label });
    dc.onopen = () => emit({ type: "open", ...base(), id: dc.id });
    dc.onclosing = () => emit({ type: "closing", ...base() });
    dc.onclose = () => emit({ type: "close", ...base() });
    dc.onerror = (e) =>
      emit({ type: "error", ...base(), message: e.error ? String(e.error.message) : "" });
    dc.onmessage = (e) => {
      const data = e.data;
      const jsType = typeof data;
      const constructorName = data && data.constructor ? data.constructor.name : null;
      if (jsType === "string") {
        emit({ type: "message", ...base(), kind: "text", jsType, constructorName, data });
      } else if (data instanceof ArrayBuffer) {
        emit({
          type: "message",
          ...base(),
          kind: "binary",
          jsType,
          constructorName,
          byteLength: data.byteLength,
          data: toBase64(data),
        });
      } else {
        emit({ type: "message", ...base(), kind: "unexpected", jsType, constructorName });
      }
    };
    return describe(dc);
  };

  const plainDescription = (d) => ({ type: d.type, sdp: d.sdp });

  window.specterTest = {
    // Camera and microphone permission (fake devices, no prompt) is what makes Chromium
    // offer its 127.0.0.1 candidate under --allow-loopback-in-peer-connection. Only the
    // permission matters: the tracks are stopped at once.
    async grantMediaPermission() {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const kinds = stream.getTracks().map((t) => t.kind).sort();
      stream.getTracks().forEach((t) => t.stop());
      return kinds;
    },

    newPeerConnection(name) {
      if (pcs.has(name)) throw new Error(`duplicate peer connection ${name}`);
      // No STUN or TURN server: nothing may leave loopback.
      const pc = new RTCPeerConnection({ iceServers: [] });
      pcs.set(name, pc);
      pc.onicecandidate = (e) =>
        emit({ type: "ice_candidate", pc: name, candidate: e.candidate ? e.candidate.toJSON() : null });
      pc.onconnectionstatechange = () =>
        emit({ type: "connection_state", pc: name, state: pc.connectionState });
      pc.ondatachannel = (e) => emit({ type: "datachannel", pc: name, ...wire(name, e.channel) });
      return true;
    },

    createDataChannel(pcName, label, init) {
      return wire(pcName, getPc(pcName).createDataChannel(label, init || {}));
    },

    async createOffer(pcName) {
      const pc = getPc(pcName);
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      return plainDescription(offer);
    },

    async answer(pcName, offer) {
      const pc = getPc(pcName);
      await pc.setRemoteDescription(offer);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      return plainDescription(answer);
    },

    async setRemoteDescription(pcName, description) {
      await getPc(pcName).setRemoteDescription(description);
      return true;
    },

    // `null` is the remote's end-of-candidates.
    async addIceCandidate(pcName, candidate) {
      await getPc(pcName).addIceCandidate(candidate === null ? undefined : candidate);
      return true;
    },

    connectionState(pcName) {
      return getPc(pcName).connectionState;
    },

    sctp(pcName) {
      const sctp = getPc(pcName).sctp;
      return sctp
        ? { state: sctp.state, maxMessageSize: sctp.maxMessageSize, maxChannels: sctp.maxChannels }
        : null;
    },

    send(label, kind, payload) {
      const dc = getChannel(label);
      if (kind === "text") dc.send(payload);
      else if (kind === "binary") dc.send(fromBase64(payload).buffer);
      else throw new Error(`unknown message kind ${kind}`);
      return dc.bufferedAmount;
    },

    closeChannel(label) {
      getChannel(label).close();
      return getChannel(label).readyState;
    },

    channel(label) {
      return describe(getChannel(label));
    },

    closeAll() {
      for (const pc of pcs.values()) pc.close();
      pcs.clear();
      channels.clear();
      return true;
    },
  };
})();
