//! How voters reach each other: openraft's three RPCs over the internal protocol
//! ([`super::rpc`]), one connection per peer and replication stream. A quorum of one voter
//! never sends any.

use std::io;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::rpc::{InternalRequest, InternalResponse, PeerConnection};
use super::{ControllerNode, TypeConfig};

/// Makes a [`Peer`] for each voter openraft talks to.
#[derive(Debug, Clone, Default)]
pub struct Peers;

/// Another voter, reached at its controller endpoint.
#[derive(Debug)]
pub struct Peer {
    target: u64,
    node: ControllerNode,
    connection: PeerConnection,
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &ControllerNode) -> Peer {
        Peer {
            target,
            node: node.clone(),
            connection: PeerConnection::new(format!("{}:{}", node.host, node.port)),
        }
    }
}

type Failed<E> = RPCError<u64, ControllerNode, E>;

impl Peer {
    /// Sends `request`; the answer, or why there is none.
    async fn call<E: std::error::Error>(
        &mut self,
        request: InternalRequest,
        option: &RPCOption,
    ) -> Result<InternalResponse, Failed<E>> {
        if self.node.port == 0 {
            let error = io::Error::other(format!(
                "node {} has no controller endpoint (controller.quorum.voters)",
                self.target
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        }
        self.connection
            .call(&request, option.hard_ttl())
            .await
            .map_err(|error| match error.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NotConnected
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable => {
                    RPCError::Unreachable(Unreachable::new(&error))
                }
                _ => RPCError::Network(NetworkError::new(&error)),
            })
    }

    fn remote<E: std::error::Error>(&self, error: E) -> Failed<E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            error,
        ))
    }

    fn wrong_kind<E: std::error::Error>(&self) -> Failed<E> {
        let error = io::Error::other(format!("node {} answered another kind", self.target));
        RPCError::Network(NetworkError::new(&error))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Failed<RaftError<u64>>> {
        match self.call(InternalRequest::Append(rpc), &option).await? {
            InternalResponse::Append(Ok(answer)) => Ok(answer),
            InternalResponse::Append(Err(error)) => Err(self.remote(error)),
            _ => Err(self.wrong_kind()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Failed<RaftError<u64, InstallSnapshotError>>> {
        match self.call(InternalRequest::Snapshot(rpc), &option).await? {
            InternalResponse::Snapshot(Ok(answer)) => Ok(answer),
            InternalResponse::Snapshot(Err(error)) => Err(self.remote(error)),
            _ => Err(self.wrong_kind()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Failed<RaftError<u64>>> {
        match self.call(InternalRequest::Vote(rpc), &option).await? {
            InternalResponse::Vote(Ok(answer)) => Ok(answer),
            InternalResponse::Vote(Err(error)) => Err(self.remote(error)),
            _ => Err(self.wrong_kind()),
        }
    }
}
