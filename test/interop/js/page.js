// The browser side of Specter's interop tests. Runs in a page served from 127.0.0.1 by
// driver.js; the driver calls `window.specterTest.<name>(...args)` for each command from
// Elixir and `window.specterEmit(event)` (a Playwright binding in Chromium, a Puppeteer
// exposed function in Firefox) carries events back. The same page runs in both browsers.
//
// Peer connections are named by the test ("pc"); data channels by their label, which the
// tests keep unique within a page. Binary payloads travel as base64 in both directions.
"use strict";

(() => {
  const pcs = new Map();
  const channels = new Map();
  // Camera and microphone streams the page sends (stopped by closeAll).
  const localStreams = [];
  // <video>/<audio> elements playing the remote tracks, by track id.
  const sinks = new Map();
  // Frames each <video> sink presented (requestVideoFrameCallback), by track id.
  const presented = new Map();

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

  // A remote track plays in a <video> or <audio> element, as in a real application: then
  // Chromium decodes video for a sink and pulls received audio through its playout path
  // (totalSamplesReceived). Autoplay needs no user gesture here (muted, or headless).
  const onTrack = (pcName, e) => {
    const track = e.track;
    const element = document.createElement(track.kind === "video" ? "video" : "audio");
    element.autoplay = true;
    element.muted = true;
    element.playsInline = true;
    element.srcObject = new MediaStream([track]);
    document.body.appendChild(element);
    sinks.set(track.id, element);
    if (track.kind === "video" && "requestVideoFrameCallback" in element) {
      presented.set(track.id, 0);
      const onFrame = () => {
        if (!sinks.has(track.id)) return;
        presented.set(track.id, presented.get(track.id) + 1);
        element.requestVideoFrameCallback(onFrame);
      };
      element.requestVideoFrameCallback(onFrame);
    }
    element.play().catch((err) =>
      emit({ type: "play_error", pc: pcName, kind: track.kind, message: String(err) }),
    );
    track.onunmute = () => emit({ type: "track_unmute", pc: pcName, kind: track.kind, id: track.id });
    track.onmute = () => emit({ type: "track_mute", pc: pcName, kind: track.kind, id: track.id });
    track.onended = () => emit({ type: "track_ended", pc: pcName, kind: track.kind, id: track.id });
    emit({
      type: "track",
      pc: pcName,
      kind: track.kind,
      id: track.id,
      mid: e.transceiver ? e.transceiver.mid : null,
      streams: e.streams.map((s) => s.id),
    });
  };

  // The stats dictionaries of one type, with each one's codec (mimeType, clockRate,
  // payloadType, sdpFmtpLine) resolved from its codecId.
  const statsOfType = async (pcName, type) => {
    const report = await getPc(pcName).getStats();
    const out = [];
    report.forEach((s) => {
      if (s.type !== type) return;
      const entry = { ...s };
      const codec = s.codecId ? report.get(s.codecId) : null;
      if (codec) {
        entry.codec = {
          mimeType: codec.mimeType,
          clockRate: codec.clockRate,
          payloadType: codec.payloadType,
          sdpFmtpLine: codec.sdpFmtpLine || null,
        };
      }
      out.push(entry);
    });
    return out;
  };

  window.specterTest = {
    // Camera and microphone permission (fake devices, no prompt) is what makes Chromium
    // offer its 127.0.0.1 candidate under --allow-loopback-in-peer-connection: there only
    // the permission matters and the tracks are stopped at once. Firefox (with
    // media.peerconnection.ice.loopback) gathers on 127.0.0.1 only while the page is
    // capturing: with `keep`, the stream runs until closeAll.
    async grantMediaPermission(keep) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const kinds = stream.getTracks().map((t) => t.kind).sort();
      if (keep) localStreams.push(stream);
      else stream.getTracks().forEach((t) => t.stop());
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
      pc.onicegatheringstatechange = () =>
        emit({ type: "gathering_state", pc: name, state: pc.iceGatheringState });
      pc.ondatachannel = (e) => emit({ type: "datachannel", pc: name, ...wire(name, e.channel) });
      pc.ontrack = (e) => onTrack(name, e);
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

    // The answer to a remote offer already set with setRemoteDescription (so tracks can be
    // added to the offered transceivers first).
    async createAnswer(pcName) {
      const pc = getPc(pcName);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      return plainDescription(answer);
    },

    async setRemoteDescription(pcName, description) {
      await getPc(pcName).setRemoteDescription(description);
      return true;
    },

    // The local description once ICE gathering is complete, with every candidate in it: what
    // a peer that does not trickle sends (after setLocalDescription).
    async gatheredDescription(pcName, timeoutMs) {
      const pc = getPc(pcName);
      if (!pc.localDescription) throw new Error("no local description yet");
      if (pc.iceGatheringState !== "complete") {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`ICE gathering not complete: ${pc.iceGatheringState}`)),
            timeoutMs || 10_000,
          );
          pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") {
              clearTimeout(timer);
              resolve();
            }
          });
        });
      }
      return plainDescription(pc.localDescription);
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

    // Sends the fake camera and microphone on a connection (`addTrack`, one stream): before
    // an offer, in new sendrecv transceivers; after a remote offer, in its transceivers.
    // Returns each track's kind, id, stream id and settings (width, height, frameRate...).
    async addUserMedia(pcName, constraints) {
      const pc = getPc(pcName);
      const stream = await navigator.mediaDevices.getUserMedia(
        constraints || { audio: true, video: true },
      );
      localStreams.push(stream);
      return stream.getTracks().map((track) => {
        pc.addTrack(track, stream);
        return { kind: track.kind, id: track.id, streamId: stream.id, settings: track.getSettings() };
      });
    },

    // A transceiver with no track, e.g. {direction: "recvonly"} to ask for media.
    addTransceiver(pcName, kind, init) {
      const t = getPc(pcName).addTransceiver(kind, init || {});
      return { mid: t.mid, direction: t.direction };
    },

    transceivers(pcName) {
      return getPc(pcName)
        .getTransceivers()
        .map((t) => ({
          mid: t.mid,
          direction: t.direction,
          currentDirection: t.currentDirection,
          senderKind: t.sender.track ? t.sender.track.kind : null,
          receiverKind: t.receiver.track ? t.receiver.track.kind : null,
        }));
    },

    // What this Chromium can send and receive (RTCRtpSender/Receiver.getCapabilities).
    codecCapabilities(kind) {
      const mimes = (caps) => [...new Set((caps ? caps.codecs : []).map((c) => c.mimeType))];
      return {
        send: mimes(RTCRtpSender.getCapabilities(kind)),
        receive: mimes(RTCRtpReceiver.getCapabilities(kind)),
      };
    },

    inboundRtp(pcName) {
      return statsOfType(pcName, "inbound-rtp");
    },

    outboundRtp(pcName) {
      return statsOfType(pcName, "outbound-rtp");
    },

    // The element playing a remote track: its decoded size and playback state.
    sink(trackId) {
      const el = sinks.get(trackId);
      if (!el) throw new Error(`no sink for track ${trackId}`);
      return {
        kind: el.tagName.toLowerCase(),
        paused: el.paused,
        readyState: el.readyState,
        currentTime: el.currentTime,
        videoWidth: el.videoWidth === undefined ? null : el.videoWidth,
        videoHeight: el.videoHeight === undefined ? null : el.videoHeight,
        framesPresented: presented.has(trackId) ? presented.get(trackId) : null,
      };
    },

    // The picture a <video> element shows now, as the mean RGB of each cell of a
    // cols x rows grid (row by row), drawn at the video's own size.
    frameGrid(trackId, cols, rows) {
      const el = sinks.get(trackId);
      if (!el || el.tagName !== "VIDEO") throw new Error(`no video sink for track ${trackId}`);
      const w = el.videoWidth;
      const h = el.videoHeight;
      if (!w || !h) throw new Error("no video frame yet");
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(el, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, h).data;
      const grid = [];
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const sum = [0, 0, 0];
          let n = 0;
          for (let y = Math.floor((r * h) / rows); y < Math.floor(((r + 1) * h) / rows); y++) {
            for (let x = Math.floor((c * w) / cols); x < Math.floor(((c + 1) * w) / cols); x++) {
              const i = (y * w + x) * 4;
              sum[0] += data[i];
              sum[1] += data[i + 1];
              sum[2] += data[i + 2];
              n++;
            }
          }
          grid.push(sum.map((v) => Math.round(v / n)));
        }
      }
      return grid;
    },

    closeAll() {
      for (const pc of pcs.values()) pc.close();
      pcs.clear();
      channels.clear();
      for (const stream of localStreams) stream.getTracks().forEach((t) => t.stop());
      localStreams.length = 0;
      for (const el of sinks.values()) {
        el.srcObject = null;
        el.remove();
      }
      sinks.clear();
      presented.clear();
      return true;
    },
  };
})();
